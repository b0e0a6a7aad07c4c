-- Hands a running task back to the front of its queue at once (graceful stop), without counting
-- the attempt, only for the current claim.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- KEYS[2]  stellar:{tasks}:inflight
-- KEYS[3]  stellar:{tasks}:queue:<queue>
-- ARGV[1]  id
-- ARGV[2]  claim token
-- ARGV[3]  the wake-up channel of the queue
-- ARGV[4]  the queue name
-- Returns 1 handed back, 0 rejected.
if redis.call('HGET', KEYS[1], 'claims') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'state', 'queued')
redis.call('HDEL', KEYS[1], 'node')
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
