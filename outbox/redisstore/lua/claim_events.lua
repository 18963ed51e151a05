-- claim_events.lua: claim the head events of answers of one partition
-- (Store.ClaimEvents). Only an answer's first unacknowledged event is ever
-- claimed, and the claim moves the answer's score to the end of the claim,
-- so no two consumers hold one event and an answer's events go out in order.
--
-- KEYS: 1 evq zset; then per candidate answer i: 2i event list, 2i+1 event
--       state hash
-- ARGV: 1 now µs   2 claim end µs   3 limit   4 token prefix   5 consumer
--       5+i the id of candidate i
-- Returns: a flat array of (event "<at µs> <JSON>", token, attempts, first
--          attempt µs or "", done JSON or "") for each event claimed.
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
local out, taken = {}, 0
for i = 1, (#KEYS - 1) / 2 do
  if taken >= limit then break end
  local id, lk, sk = ARGV[5 + i], KEYS[2 * i], KEYS[2 * i + 1]
  local s = redis.call('ZSCORE', KEYS[1], id)
  if s and tonumber(s) <= now then
    local acked = tonumber(redis.call('HGET', sk, 'acked') or '0')
    local ev = redis.call('LINDEX', lk, acked)
    if ev then
      local token = ARGV[4] .. '.' .. i
      redis.call('HSET', sk, 'token', token, 'until', ARGV[2], 'claimed', ARGV[1], 'consumer', ARGV[5])
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      taken = taken + 1
      out[#out + 1] = ev
      out[#out + 1] = token
      out[#out + 1] = redis.call('HGET', sk, 'attempts') or '0'
      out[#out + 1] = redis.call('HGET', sk, 'first') or ''
      out[#out + 1] = redis.call('HGET', sk, 'done') or ''
    else
      redis.call('ZREM', KEYS[1], id) -- nothing left to deliver
    end
  end
end
return out
