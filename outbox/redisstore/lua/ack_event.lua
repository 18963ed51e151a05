-- ack_event.lua: mark a claimed event handled (Store.AckEvent). The
-- answer's next event, if any, becomes its head, claimable at once.
--
-- KEYS: 1 evq zset   2 evage zset   3 event list   4 event state hash
-- ARGV: 1 answer id   2 claim token   3 now µs
-- Returns: "OK"; "LEASELOST" when the token is not the current claim (a
--          second ack of one claim included).
if redis.call('HGET', KEYS[4], 'token') ~= ARGV[2] then return 'LEASELOST' end
local acked = redis.call('HINCRBY', KEYS[4], 'acked', 1)
redis.call('HDEL', KEYS[4], 'token', 'until', 'claimed', 'consumer', 'attempts', 'first', 'done')
local nxt = redis.call('LINDEX', KEYS[3], acked)
if nxt then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[2], string.match(nxt, '^(%-?%d+) '), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 'OK'
