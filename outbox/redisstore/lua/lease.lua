-- lease.lua: lease due answers of one partition (Store.Lease). Go picks the
-- candidates, oldest due first, from every partition; this script takes
-- those that are still due, in the order given, up to a limit, so workers
-- racing for the same candidates each get different ones.
--
-- KEYS: 1 due zset   2 leases hash   3.. the candidates' record hashes
-- ARGV: 1 now µs   2 lease end µs   3 limit   4 token prefix
--       5.. the candidates' ids, aligned with KEYS[3..]
-- Returns: a flat array of (id, token, JSON record) for each answer leased.
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
local out, taken = {}, 0
for i = 3, #KEYS do
  if taken >= limit then break end
  local id = ARGV[i + 2]
  local s = redis.call('ZSCORE', KEYS[1], id)
  if s and tonumber(s) <= now then
    local j = redis.call('HGET', KEYS[i], 'j')
    if j then
      local token = ARGV[4] .. '.' .. (i - 2)
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      redis.call('HSET', KEYS[2], id, token)
      taken = taken + 1
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = j
    else
      redis.call('ZREM', KEYS[1], id) -- an entry without a record
    end
  end
end
return out
