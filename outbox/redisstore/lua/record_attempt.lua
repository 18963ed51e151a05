-- record_attempt.lua: persist Answer.ApplyAttempt under a lease and end the
-- lease (Store.RecordAttempt). The answer is due again at NextAttemptAt if a
-- recipient is still pending and leaves the queue otherwise.
--
-- KEYS: 1..13 the common block (prelude.lua)
-- ARGV: 1..12+n the common block; 13+n the lease token
-- Returns: "OK"; "LEASELOST" when the token is not the answer's current
--          lease; "CONFLICT" when the record changed since it was read (the
--          caller re-reads and re-applies); "NOTFOUND"; "EXPIRED".
local replay, v = read_guard()
if replay then return 'OK' end
local token = ARGV[13 + tonumber(ARGV[12])]
if redis.call('HGET', KEYS[4], ARGV[1]) ~= token then return 'LEASELOST' end
local e = version_error(v)
if e then return e end
redis.call('HDEL', KEYS[4], ARGV[1])
commit(true)
return 'OK'
