-- extend_lease.lua: move the end of a lease still held (Store.ExtendLease).
-- The answer stays due at the lease's end, so it is due again, for anyone,
-- only when the extended lease expires.
--
-- KEYS: 1 due zset   2 leases hash
-- ARGV: 1 answer id   2 lease token   3 new end of the lease, µs
-- Returns: "OK"; "LEASELOST" when the token is not the answer's lease.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 'LEASELOST' end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 'OK'
