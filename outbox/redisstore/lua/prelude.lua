-- prelude.lua: shared by every answer transition script (accept,
-- record_attempt, mark_delayed, record_report, resend). Go prepends it to
-- each of them, so a transition remains one script and one atomic step.
--
-- Common KEYS (keys.go, answerKeys):
--   1 record hash   2 tombstone   3 due zset   4 leases hash   5 age zset
--   6 await zset    7 all zset    8 st:<old status>   9 st:<new status>
--   10 event list   11 event state hash   12 evq zset   13 evage zset
-- Common ARGV:
--   1 answer id     2 version the caller read (guard)   3 new version
--   4 nonce of this write   5 new JSON record
--   6 queued "1"/"0" (a recipient is pending)   7 awaiting "1"/"0" (one is scheduled)
--   8 QueuedAt µs   9 list member, "<AcceptedAt µs, 17 digits>:<id>" (keys.go)
--   10 NextAttemptAt µs   11 now µs
--   12 n, the number of new events   13..12+n the events, "<at µs> <JSON>"
-- Script-specific ARGV follow from 13+n.
--
-- Scripts check everything before their first write: a script that returns
-- anything but "OK" has written nothing.

-- replayed reports whether this very write was already applied: go-redis
-- retries a command whose reply was lost, and the retry must not fail (or
-- apply twice).
local function replayed()
  return redis.call('HGET', KEYS[1], 'n') == ARGV[4]
end

-- check_version is the compare-and-set guard: nil when the record is at the
-- version the caller read, else the code to return.
local function check_version()
  local v = redis.call('HGET', KEYS[1], 'v')
  if not v then
    if redis.call('EXISTS', KEYS[2]) == 1 then return 'EXPIRED' end
    return 'NOTFOUND'
  end
  if v ~= ARGV[2] then return 'CONFLICT' end
  return nil
end

-- commit writes the record, brings every index in line with it and appends
-- the new events to the answer's event list.
local function commit()
  local id = ARGV[1]
  redis.call('HSET', KEYS[1], 'j', ARGV[5], 'v', ARGV[3], 'n', ARGV[4])
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[5], ARGV[8], id)
    -- A leased answer stays due at the end of its lease.
    if redis.call('HEXISTS', KEYS[4], id) == 0 then
      redis.call('ZADD', KEYS[3], ARGV[10], id)
    end
  else
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[5], id)
    redis.call('HDEL', KEYS[4], id)
  end
  if ARGV[7] == '1' then
    redis.call('ZADD', KEYS[6], ARGV[8], id)
  else
    redis.call('ZREM', KEYS[6], id)
  end
  -- KEYS[7], the list of all answers, changes only on accept and expire.
  if KEYS[8] ~= KEYS[9] then
    redis.call('ZREM', KEYS[8], ARGV[9])
    redis.call('ZADD', KEYS[9], 0, ARGV[9])
  end
  local n = tonumber(ARGV[12])
  for i = 1, n do
    redis.call('RPUSH', KEYS[10], ARGV[12 + i])
  end
  if n > 0 then
    -- When the answer had no unacked event, the first new one is its head:
    -- claimable now. Otherwise its head and claim time stand.
    redis.call('ZADD', KEYS[12], 'NX', ARGV[11], id)
    local at = string.match(ARGV[13], '^(%-?%d+) ')
    redis.call('ZADD', KEYS[13], 'NX', at, id)
  end
end
