-- Extends a lock only for the token that holds it (compare-and-expire).
-- KEYS[1]  <lock prefix>{<key>}
-- ARGV[1]  token
-- ARGV[2]  new ttl in ms
-- Returns 1 extended, 0 not held by this token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
