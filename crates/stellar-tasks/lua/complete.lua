-- Records a success, only for the current claim (a late answer from a lost lease is rejected).
-- KEYS[1]  stellar:task:<id>
-- KEYS[2]  stellar:tasks:inflight
-- KEYS[3]  stellar:tasks:stats       HASH  counters
-- KEYS[4]  stellar:tasks:stats:nodes ZSET  node -> last counter update (ms), the index of the per-node hashes
-- ARGV[1]  id
-- ARGV[2]  claim token
-- ARGV[3]  how long to keep the completed record, in ms
-- ARGV[4]  per-node counter prefix, "stellar:tasks:stats:node:" (a HASH per node, expiring)
-- ARGV[5]  how long a node's counters outlive its last update, in ms
-- Returns 1 accepted (also when this very claim completed it already: a repeat after a lost reply),
-- 0 rejected.
local current = redis.call('HMGET', KEYS[1], 'claims', 'state')
if current[1] ~= ARGV[2] then
  return 0
end
if current[2] == 'completed' then
  return 1
end
if current[2] ~= 'running' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'completed', 'finished_at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local name = redis.call('HGET', KEYS[1], 'name')
redis.call('HINCRBY', KEYS[3], 'processed', 1)
redis.call('HINCRBY', KEYS[3], 'processed:' .. name, 1)
local node = redis.call('HGET', KEYS[1], 'node') or '?'
local per_node = ARGV[4] .. node
redis.call('HINCRBY', per_node, 'processed', 1)
redis.call('PEXPIRE', per_node, ARGV[5])
redis.call('ZADD', KEYS[4], now, node)
return 1
