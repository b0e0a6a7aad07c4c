-- Writes one entry unless another owner holds the key's lock.
-- KEYS[1]  <prefix>{<key>}        HASH  value (JSON), created_at (ms), read_at (ms, optional)
-- KEYS[2]  <lock prefix>{<key>}   STRING  the lock holder's token
--          (both carry the hash tag {<key>}: one slot on Redis Cluster)
-- ARGV[1]  value as JSON
-- ARGV[2]  ttl in ms, or "" for none
-- ARGV[3]  the writer's lock token, or "" for none
-- Returns 1 when written, 0 when locked by someone else.
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[3] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'created_at', now)
if ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
