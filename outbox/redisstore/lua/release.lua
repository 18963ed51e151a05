-- release.lua: end a lease without an attempt; the answer is due at once
-- (Store.Release).
--
-- KEYS: 1 due zset   2 leases hash
-- ARGV: 1 answer id   2 lease token   3 now µs
-- Returns: "OK"; "LEASELOST" when the token is not the answer's lease.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 'LEASELOST' end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 'OK'
