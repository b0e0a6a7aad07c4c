-- Records successes of several claims at once; each only for the current claim (late answers
-- from lost leases are rejected one by one).
-- KEYS[1]  stellar:{tasks}:inflight
-- KEYS[2]  stellar:{tasks}:stats
-- KEYS[3]  stellar:{tasks}:stats:nodes  ZSET  node -> last counter update (ms)
-- KEYS[4]  task key prefix, "stellar:{tasks}:task:" (KEYS[4] .. id)
-- KEYS[5]  per-node counter prefix, "stellar:{tasks}:stats:node:" (a HASH per node, expiring)
-- ARGV[1]  how long to keep completed records, in ms
-- ARGV[2]  how long a node's counters outlive its last update, in ms
-- ARGV[3..] pairs: id, claim token
-- Returns one 1 (accepted) or 0 (rejected) per pair, in order; a pair whose claim completed the
-- task already (a repeat after a lost reply) is accepted again without counting twice.
-- Per task one read and two writes; the in-flight removals and the counters go once per batch.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local done = {}
local by_name = {}
local by_node = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = KEYS[4] .. id
  -- pcall: a key planted with another type is a rejected answer, not an error half way
  -- through the batch (Redis would keep the completions before it, their leases still held).
  local f = redis.pcall('HMGET', key, 'claims', 'state', 'name', 'node')
  if f.err then
    table.insert(out, 0)
  elseif f[1] == token and f[2] == 'running' then
    redis.call('HSET', key, 'state', 'completed', 'finished_at', now)
    redis.call('PEXPIRE', key, ARGV[1])
    table.insert(done, id)
    local name, node = f[3] or '', f[4] or '?'
    by_name[name] = (by_name[name] or 0) + 1
    by_node[node] = (by_node[node] or 0) + 1
    table.insert(out, 1)
  elseif f[1] == token and f[2] == 'completed' then
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
if #done > 0 then
  for i = 1, #done, 200 do
    redis.call('ZREM', KEYS[1], unpack(done, i, math.min(i + 199, #done)))
  end
  redis.call('HINCRBY', KEYS[2], 'processed', #done)
  for name, n in pairs(by_name) do
    redis.call('HINCRBY', KEYS[2], 'processed:' .. name, n)
  end
end
for node, n in pairs(by_node) do
  redis.call('HINCRBY', KEYS[5] .. node, 'processed', n)
  redis.call('PEXPIRE', KEYS[5] .. node, ARGV[2])
  redis.call('ZADD', KEYS[3], now, node)
end
return out
