-- take_dead_letter.lua: remove a dead letter and return it
-- (Store.TakeDeadLetter).
--
-- KEYS: 1 dl zset (members "<At µs, 17 digits>:<id>")   2 dl:rec hash
--       (id → "<At µs, 17 digits><JSON>")
-- ARGV: 1 dead letter id
-- Returns: the hash value of the dead letter, or nil when there is none.
local j = redis.call('HGET', KEYS[2], ARGV[1])
if not j then return false end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], string.sub(j, 1, 17) .. ':' .. ARGV[1])
return j
