-- Records the progress a running task reports, only for the current claim.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- ARGV[1]  claim token
-- ARGV[2]  the progress, JSON
-- Returns 1 recorded, 0 when the claim is no longer current.
if redis.call('HGET', KEYS[1], 'claims') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
