-- accept.lua: store a new answer, its body, its reference indexes and its
-- answer.scheduled event (Store.Accept).
--
-- KEYS: 1..13 the common block (prelude.lua); 14 body string;
--       15 temporary body key, written by Go (with a TTL) before the script
--       runs, renamed to 14 here; 16.. reference index zsets
--       (idx:<key>:<value>, ticket included; keys.go, indexKeys)
-- ARGV: 1..12+n the common block (ARGV[2] is ignored: there is no old
--       version; 6 and 7 compare with no answer)
-- Returns: "OK"; "EXISTS" when the id is taken (or was, and expired);
--          "NOBODY" when the temporary body is gone (its TTL ran out).
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  if redis.call('HGET', KEYS[1], 'n') == ARGV[4] then
    -- A retry of this very accept, whose reply was lost: it sent the
    -- temporary body again.
    redis.call('DEL', KEYS[15])
    return 'OK'
  end
  return 'EXISTS'
end
-- RENAME fails, and so writes nothing, only when there is no such key.
local r = redis.pcall('RENAME', KEYS[15], KEYS[14])
if type(r) == 'table' and r.err then return 'NOBODY' end
redis.call('PERSIST', KEYS[14])
for i = 16, #KEYS do
  redis.call('ZADD', KEYS[i], 0, ARGV[9])
end
redis.call('ZADD', KEYS[7], 0, ARGV[9])
redis.call('ZADD', KEYS[9], 0, ARGV[9])
commit(true)
return 'OK'
