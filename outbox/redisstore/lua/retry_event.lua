-- retry_event.lua: end a claim and make the same event claimable again at a
-- later time, counting the attempt (Store.RetryEvent).
--
-- KEYS: 1 evq zset   2 event state hash
-- ARGV: 1 answer id   2 claim token   3 retry time µs   4 done endpoints JSON
-- Returns: "OK"; "LEASELOST" when the token is not the current claim (a
--          second retry of one claim included).
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 'LEASELOST' end
local claimed = redis.call('HGET', KEYS[2], 'claimed')
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
if claimed then
  redis.call('HSETNX', KEYS[2], 'first', claimed)
end
redis.call('HDEL', KEYS[2], 'token', 'until', 'claimed', 'consumer')
redis.call('HSET', KEYS[2], 'done', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 'OK'
