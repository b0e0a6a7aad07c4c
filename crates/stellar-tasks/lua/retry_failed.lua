-- Moves a failed task back to its queue with fresh attempts.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- KEYS[2]  stellar:{tasks}:failed
-- KEYS[3]  queue key prefix, "stellar:{tasks}:queue:"
-- ARGV[1]  id
-- ARGV[2]  wake-up channel prefix (a channel, not a key)
-- ARGV[3]  a new record signature, or "" to keep the record's
-- Returns 1 moved, 0 not a failed task.
if redis.call('HGET', KEYS[1], 'state') ~= 'failed' then
  return 0
end
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0)
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'sig', ARGV[3])
end
redis.call('LPUSH', KEYS[3] .. queue, ARGV[1])
redis.call('PUBLISH', ARGV[2] .. queue, queue)
return 1
