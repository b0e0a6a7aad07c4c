-- Releases a lock only for the token that holds it (compare-and-delete).
-- KEYS[1]  <lock prefix>{<key>}
-- ARGV[1]  token
-- Returns 1 released, 0 not held by this token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
