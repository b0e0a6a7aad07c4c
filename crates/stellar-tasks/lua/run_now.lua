-- Moves one delayed task (a delayed enqueue or a retry waiting for its backoff) to the front of
-- its queue, due now. Atomic: the task is in exactly one place before and after, its record
-- (and so its signature) is left as is but for its state and due time, attempts are kept.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- KEYS[2]  stellar:{tasks}:delayed
-- KEYS[3]  queue key prefix, "stellar:{tasks}:queue:"
-- ARGV[1]  id
-- ARGV[2]  wake-up channel prefix (a channel, not a key)
-- Returns 1 moved, 0 not a delayed task (or a record without a queue: left as it is).
local f = redis.call('HMGET', KEYS[1], 'state', 'queue')
local queue = f[2]
-- Checked before anything is written: a malformed record is never half moved.
if f[1] ~= 'delayed' or not queue then
  return 0
end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'queued', 'due_at', now)
-- The front: claims pop from the right (as release and reap hand tasks back).
redis.call('RPUSH', KEYS[3] .. queue, ARGV[1])
redis.call('PUBLISH', ARGV[2] .. queue, queue)
return 1
