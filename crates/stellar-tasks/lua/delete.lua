-- Deletes a task that is not running (queued, delayed, failed or completed). O(1): an id left in
-- its queue list is stale and claims drop it.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- KEYS[2]  stellar:{tasks}:delayed
-- KEYS[3]  stellar:{tasks}:failed
-- ARGV[1]  id
-- ARGV[2]  optional: delete only a task in this state ("delayed"); checked in the same step
-- Returns 1 deleted, 0 absent, -1 running (not deleted: its worker still holds it), -2 not in the
-- state ARGV[2] asks for (not deleted).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 0
end
if state == 'running' then
  return -1
end
if ARGV[2] and ARGV[2] ~= '' and state ~= ARGV[2] then
  return -2
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])
