-- resend.lua: persist Answer.Resend (Store.Resend): the answer is queued
-- again, due at once (unless a worker still holds a lease on it).
--
-- KEYS: 1..13 the common block (prelude.lua)
-- ARGV: 1..12+n the common block
-- Returns: "OK"; "CONFLICT" when the record changed since it was read;
--          "NOTFOUND"; "EXPIRED".
local replay, v = read_guard()
if replay then return 'OK' end
local e = version_error(v)
if e then return e end
commit(false)
return 'OK'
