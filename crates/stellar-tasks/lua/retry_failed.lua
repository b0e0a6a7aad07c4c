-- Moves a failed task back to its queue with fresh attempts.
-- KEYS[1]  stellar:task:<id>
-- KEYS[2]  stellar:tasks:failed
-- ARGV[1]  id
-- ARGV[2]  queue key prefix, "stellar:queue:"
-- ARGV[3]  wake-up channel prefix
-- ARGV[4]  a new record signature, or "" to keep the record's
-- Returns 1 moved, 0 not a failed task.
if redis.call('HGET', KEYS[1], 'state') ~= 'failed' then
  return 0
end
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'sig', ARGV[4])
end
redis.call('LPUSH', ARGV[2] .. queue, ARGV[1])
redis.call('PUBLISH', ARGV[3] .. queue, queue)
return 1
