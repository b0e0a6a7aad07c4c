-- Takes a lock if free (or refreshes it if the same token holds it) and bumps its fencing counter.
-- KEYS[1]  <lock prefix><key>     STRING  the holder's token, with a TTL
-- KEYS[2]  <lock prefix>fences    HASH    key -> fencing counter (never expires)
-- ARGV[1]  token
-- ARGV[2]  ttl in ms
-- ARGV[3]  the key (field of the fences hash)
-- Returns the fencing token of this acquisition, or 0 when another token holds the lock.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if holder then
  return tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
end
return redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
