-- record_unmatched.lua: keep a bounce that matched no answer
-- (Store.RecordUnmatched).
--
-- KEYS: 1 unm zset   2 unm:rec hash   3 unm:raw hash
-- ARGV: 1 report id   2 list member "<ReceivedAt µs, 17 digits>:<id>"
--       3 JSON of outbox.Unmatched   4 raw ("" for none)
-- Returns: "OK"; "DUPLICATE" when a report with that id is kept already.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'DUPLICATE' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], 0, ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
end
return 'OK'
