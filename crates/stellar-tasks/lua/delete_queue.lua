-- Deletes a queue and the records of the tasks waiting in it.
-- KEYS[1]  stellar:queue:<queue>
-- KEYS[2]  stellar:tasks:queues
-- ARGV[1]  task key prefix, "stellar:task:"
-- ARGV[2]  the queue name
-- Returns how many tasks were deleted.
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  if redis.call('HGET', ARGV[1] .. id, 'state') == 'queued' then
    redis.call('DEL', ARGV[1] .. id)
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return #ids
