-- Deletes one entry unless another owner holds the key's lock.
-- KEYS[1]  <prefix>{<key>}
-- KEYS[2]  <lock prefix>{<key>}
--          (both carry the hash tag {<key>}: one slot on Redis Cluster)
-- ARGV[1]  the caller's lock token, or ""
-- Returns 1 deleted, 0 absent, -1 locked by someone else.
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return -1
end
return redis.call('DEL', KEYS[1])
