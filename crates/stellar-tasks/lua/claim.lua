-- Claims the oldest ready task of the first non-empty queue, atomically leasing it.
-- KEYS[1]  stellar:tasks:inflight     ZSET  id -> lease deadline (ms, Redis time)
-- KEYS[2..n] stellar:queue:<queue>    LIST  in priority order
-- ARGV[1]  lease in ms
-- ARGV[2]  the claiming node's id
-- ARGV[3]  task key prefix, "stellar:task:"
-- Returns nil, or { id, claim token, name, queue, args, attempts (this one included), max attempts }.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #KEYS do
  local id = redis.call('RPOP', KEYS[i])
  while id do
    local key = ARGV[3] .. id
    if redis.call('HGET', key, 'state') == 'queued' then
      local token = redis.call('HINCRBY', key, 'claims', 1)
      local attempts = redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'state', 'running', 'node', ARGV[2], 'started_at', now)
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
      local f = redis.call('HMGET', key, 'name', 'queue', 'args', 'max_attempts')
      return { id, token, f[1], f[2], f[3], attempts, tonumber(f[4]) }
    end
    -- A stale id (its task was deleted or moved): skip it.
    id = redis.call('RPOP', KEYS[i])
  end
end
return nil
