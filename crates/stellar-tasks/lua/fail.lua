-- Records a failed attempt, only for the current claim: retry later, or move to the failed set.
-- KEYS[1]  stellar:{tasks}:task:<id>
-- KEYS[2]  stellar:{tasks}:inflight
-- KEYS[3]  stellar:{tasks}:delayed
-- KEYS[4]  stellar:{tasks}:failed     ZSET  id -> failed time
-- KEYS[5]  stellar:{tasks}:stats
-- KEYS[6]  stellar:{tasks}:stats:nodes  ZSET  node -> last counter update (ms)
-- ARGV[1]  id
-- ARGV[2]  claim token
-- ARGV[3]  error message
-- ARGV[4]  retry delay in ms (used only while attempts remain)
-- ARGV[5]  "1": straight to the failed set whatever attempts remain (a record that fails
--          verification)
-- KEYS[7]  per-node counter prefix, "stellar:{tasks}:stats:node:" (a HASH per node, expiring)
-- ARGV[6]  how long a node's counters outlive its last update, in ms
-- Returns 0 rejected, 1 scheduled for retry, 2 moved to the failed set.
if redis.call('HGET', KEYS[1], 'claims') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'attempts', 'max_attempts', 'name', 'node')
redis.call('HSET', KEYS[1], 'error', ARGV[3], 'finished_at', now)
if ARGV[5] ~= '1' and tonumber(f[1]) < tonumber(f[2]) then
  local due = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'state', 'delayed', 'due_at', due)
  redis.call('ZADD', KEYS[3], due, ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'retried', 1)
  redis.call('HINCRBY', KEYS[5], 'retried:' .. f[3], 1)
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'failed')
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('HINCRBY', KEYS[5], 'failed', 1)
redis.call('HINCRBY', KEYS[5], 'failed:' .. f[3], 1)
local node = f[4] or '?'
redis.call('HINCRBY', KEYS[7] .. node, 'failed', 1)
redis.call('PEXPIRE', KEYS[7] .. node, ARGV[6])
redis.call('ZADD', KEYS[6], now, node)
return 2
