-- Moves due delayed tasks to their queues. Atomic: a task is in exactly one place before and after,
-- so a crash loses nothing and concurrent promoters never duplicate.
-- KEYS[1]  stellar:tasks:delayed
-- ARGV[1]  task key prefix, "stellar:task:"
-- ARGV[2]  queue key prefix, "stellar:queue:"
-- ARGV[3]  wake-up channel prefix
-- ARGV[4]  at most this many tasks per call
-- Returns how many tasks were promoted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  local queue = redis.call('HGET', key, 'queue')
  if queue and redis.call('HGET', key, 'state') == 'delayed' then
    redis.call('HSET', key, 'state', 'queued')
    redis.call('LPUSH', ARGV[2] .. queue, id)
    redis.call('PUBLISH', ARGV[3] .. queue, queue)
  end
end
return #ids
