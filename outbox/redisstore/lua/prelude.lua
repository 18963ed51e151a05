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
--   6 queue change: "+" the answer enters the queue or its QueuedAt moves
--     (age and due written), "=" it stays queued at the same QueuedAt (due
--     written), "-" it leaves the queue, "" it stays out of it
--   7 await change: "+" a recipient is scheduled and the answer enters the
--     await set or its QueuedAt moves, "-" it leaves the await set, ""
--     no change
--   8 QueuedAt µs   9 list member, "<AcceptedAt µs, 17 digits>:<id>" (keys.go)
--   10 NextAttemptAt µs   11 now µs
--   12 n, the number of new events   13..12+n the events, "<at µs> <JSON>"
-- Script-specific ARGV follow from 13+n.
--
-- Go derives 6 and 7 from the record it read and the new one; the version
-- guard makes sure the stored record (and so every index, which each write
-- brings in line with its record) is the one it read, so only what changes
-- is written.
--
-- Scripts check everything before their first write: a script that returns
-- anything but "OK" has written nothing.

-- read_guard reads the nonce of the last write and the version: it returns
-- whether this very write was already applied (go-redis retries a command
-- whose reply was lost, and the retry must not fail, or apply twice), and
-- the stored version (false when there is no record).
local function read_guard()
  local r = redis.call('HMGET', KEYS[1], 'n', 'v')
  return r[1] == ARGV[4], r[2]
end

-- version_error is the compare-and-set guard on the version v read_guard
-- returned: nil when the record is at the version the caller read, else the
-- code to return.
local function version_error(v)
  if not v then
    if redis.call('EXISTS', KEYS[2]) == 1 then return 'EXPIRED' end
    return 'NOTFOUND'
  end
  if v ~= ARGV[2] then return 'CONFLICT' end
  return nil
end

-- commit writes the record, brings every index in line with it and appends
-- the new events to the answer's event list. nolease says the answer holds
-- no lease (a new answer, or record_attempt ended it), so the leases hash
-- need not be read or cleared.
local function commit(nolease)
  local id = ARGV[1]
  redis.call('HSET', KEYS[1], 'j', ARGV[5], 'v', ARGV[3], 'n', ARGV[4])
  local q = ARGV[6]
  if q == '+' or q == '=' then
    if q == '+' then
      redis.call('ZADD', KEYS[5], ARGV[8], id)
    end
    -- A leased answer stays due at the end of its lease.
    if nolease or redis.call('HEXISTS', KEYS[4], id) == 0 then
      redis.call('ZADD', KEYS[3], ARGV[10], id)
    end
  elseif q == '-' then
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[5], id)
    if not nolease then
      redis.call('HDEL', KEYS[4], id)
    end
  end
  if ARGV[7] == '+' then
    redis.call('ZADD', KEYS[6], ARGV[8], id)
  elseif ARGV[7] == '-' then
    redis.call('ZREM', KEYS[6], id)
  end
  -- KEYS[7], the list of all answers, changes only on accept and expire.
  if KEYS[8] ~= KEYS[9] then
    redis.call('ZREM', KEYS[8], ARGV[9])
    redis.call('ZADD', KEYS[9], 0, ARGV[9])
  end
  local n = tonumber(ARGV[12])
  if n > 0 then
    redis.call('RPUSH', KEYS[10], unpack(ARGV, 13, 12 + n))
    -- When the answer had no unacked event, the first new one is its head:
    -- claimable now. Otherwise its head and claim time stand. Every write
    -- adds and removes an answer's evq and evage entries together, so when
    -- it is in evq it is in evage too.
    if redis.call('ZADD', KEYS[12], 'NX', ARGV[11], id) == 1 then
      local at = string.match(ARGV[13], '^(%-?%d+) ')
      redis.call('ZADD', KEYS[13], 'NX', at, id)
    end
  end
end
