-- Claims up to ARGV[4] of the oldest ready tasks, from the queues in priority order, atomically
-- leasing each one.
-- KEYS[1]  stellar:tasks:inflight     ZSET  id -> lease deadline (ms, Redis time)
-- KEYS[2..n] stellar:queue:<queue>    LIST  in priority order
-- ARGV[1]  lease in ms
-- ARGV[2]  the claiming node's id
-- ARGV[3]  task key prefix, "stellar:task:"
-- ARGV[4]  at most this many tasks
-- Returns a flat array, 7 entries per claimed task:
--   id, claim token, name, queue, args, attempts (this one included), max attempts.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted = tonumber(ARGV[4])
local out = {}
local claimed = 0
for i = 2, #KEYS do
  while claimed < wanted do
    local id = redis.call('RPOP', KEYS[i])
    if not id then
      break
    end
    local key = ARGV[3] .. id
    -- A stale id (its task was deleted or moved) is skipped.
    if redis.call('HGET', key, 'state') == 'queued' then
      local token = redis.call('HINCRBY', key, 'claims', 1)
      local attempts = redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'state', 'running', 'node', ARGV[2], 'started_at', now)
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
      local f = redis.call('HMGET', key, 'name', 'queue', 'args', 'max_attempts')
      for _, v in ipairs({ id, token, f[1], f[2], f[3], attempts, tonumber(f[4]) }) do
        table.insert(out, v)
      end
      claimed = claimed + 1
    end
  end
end
return out
