-- mark_delayed.lua: persist Answer.MarkDelayed (Store.MarkDelayed). The
-- answer leaves the await set, so the sweep marks it once per queue episode.
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
