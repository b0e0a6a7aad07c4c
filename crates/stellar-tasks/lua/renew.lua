-- Extends a lease, only for the current claim.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- KEYS[2]  stellar:{tasks}:inflight
-- ARGV[1]  id
-- ARGV[2]  claim token
-- ARGV[3]  lease in ms
-- Returns 1 renewed, 0 when the claim is no longer current.
if redis.call('HGET', KEYS[1], 'claims') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
