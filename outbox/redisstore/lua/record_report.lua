-- record_report.lua: persist Answer.ApplyReport and keep the raw report
-- (Store.RecordReport).
--
-- KEYS: 1..13 the common block (prelude.lua); 14 raw report hash
-- ARGV: 1..12+n the common block; 13+n report id; 14+n raw message
--       ("" keeps none)
-- Returns: "OK"; "CONFLICT" when the record changed since it was read;
--          "NOTFOUND"; "EXPIRED".
local replay, v = read_guard()
if replay then return 'OK' end
local e = version_error(v)
if e then return e end
local x = 13 + tonumber(ARGV[12])
if ARGV[x + 1] ~= '' then
  redis.call('HSET', KEYS[14], ARGV[x], ARGV[x + 1])
end
commit(false)
return 'OK'
