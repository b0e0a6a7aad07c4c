-- Deletes a failed task.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- KEYS[2]  stellar:{tasks}:failed
-- ARGV[1]  id
-- Returns 1 deleted, 0 not a failed task.
if redis.call('HGET', KEYS[1], 'state') ~= 'failed' then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
