-- Moves one delayed task (a delayed enqueue or a retry waiting for its backoff) to the front of
-- its queue, due now. Atomic: the task is in exactly one place before and after, its record
-- (and so its signature) is left as is but for its state and due time, attempts are kept.
-- KEYS[1]  stellar:task:<id>
-- KEYS[2]  stellar:tasks:delayed
-- ARGV[1]  id
-- ARGV[2]  queue key prefix, "stellar:queue:"
-- ARGV[3]  wake-up channel prefix
-- Returns 1 moved, 0 not a delayed task.
if redis.call('HGET', KEYS[1], 'state') ~= 'delayed' then
  return 0
end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('HSET', KEYS[1], 'state', 'queued', 'due_at', now)
redis.call('LPUSH', ARGV[2] .. queue, ARGV[1])
redis.call('PUBLISH', ARGV[3] .. queue, queue)
return 1
