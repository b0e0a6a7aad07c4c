-- Returns tasks whose lease expired to their queue (or to the failed set after their last attempt),
-- invalidating the old claim so the lost worker's answer is rejected. Any node may run it.
-- KEYS[1]  stellar:{tasks}:inflight
-- KEYS[2]  stellar:{tasks}:failed
-- KEYS[3]  stellar:{tasks}:stats
-- KEYS[4]  task key prefix, "stellar:{tasks}:task:"
-- KEYS[5]  queue key prefix, "stellar:{tasks}:queue:"
-- ARGV[1]  wake-up channel prefix (a channel, not a key)
-- ARGV[2]  at most this many tasks per call
-- Returns a flat array, 3 entries per task it moved (expired entries of tasks no longer running are
-- only dropped): queue, name, 0 if it went back to its queue or 1 if to the failed set.
-- A record missing attempts or max_attempts counts them as 0 (as claim.lua does); one without a
-- queue has nowhere to go back to and goes to the failed set.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local key = KEYS[4] .. id
  redis.call('ZREM', KEYS[1], id)
  local f = redis.call('HMGET', key, 'attempts', 'max_attempts', 'queue', 'name', 'state')
  if f[5] == 'running' then
    redis.call('HSET', key, 'error', 'lease expired on node ' .. (redis.call('HGET', key, 'node') or '?'))
    local attempts, max_attempts, queue = tonumber(f[1]) or 0, tonumber(f[2]) or 0, f[3]
    if queue and attempts < max_attempts then
      redis.call('HSET', key, 'state', 'queued')
      redis.call('RPUSH', KEYS[5] .. queue, id)
      redis.call('PUBLISH', ARGV[1] .. queue, queue)
      redis.call('HINCRBY', KEYS[3], 'retried', 1)
      table.insert(out, queue)
      table.insert(out, f[4] or '')
      table.insert(out, 0)
    else
      redis.call('HSET', key, 'state', 'failed', 'finished_at', now)
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('HINCRBY', KEYS[3], 'failed', 1)
      redis.call('HINCRBY', KEYS[3], 'failed:' .. (f[4] or ''), 1)
      table.insert(out, f[3] or '')
      table.insert(out, f[4] or '')
      table.insert(out, 1)
    end
  end
end
return out
