-- expire.lua: delete an answer after retention with its body, raw reports,
-- events and index entries, and leave a tombstone (Store.Expire).
--
-- KEYS: 1..13 the common block (prelude.lua; 8 and 9 both name the
--       answer's status set); 14 body; 15 raw report hash;
--       16.. reference index zsets
-- ARGV: 1 answer id   2 version read (guard: the answer was not queued at
--       that version)   3 tombstone TTL ms   4 list member (keys.go)
-- Returns: "OK"; "CONFLICT" when the record changed since it was read;
--          "NOTFOUND".
local id = ARGV[1]
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return 'NOTFOUND' end
if v ~= ARGV[2] then return 'CONFLICT' end
redis.call('DEL', KEYS[1], KEYS[10], KEYS[11], KEYS[14], KEYS[15])
for _, i in ipairs({3, 5, 6, 12, 13}) do
  redis.call('ZREM', KEYS[i], id)
end
redis.call('HDEL', KEYS[4], id)
for _, i in ipairs({7, 8, 9}) do
  redis.call('ZREM', KEYS[i], ARGV[4])
end
for i = 16, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[4])
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 'OK'
