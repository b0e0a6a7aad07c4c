-- Claims up to ARGV[4] of the oldest ready tasks this node can run, from the queues in priority
-- order, atomically leasing each one under a claim token never used before (a global counter, so
-- re-enqueueing an id never repeats a token). A ready task of a name the node cannot run is parked
-- (no attempt counted) until a node that can run it claims it; such parked tasks come first.
-- KEYS[1]  stellar:tasks:inflight              ZSET   id -> lease deadline (ms, Redis time)
-- KEYS[2]  stellar:tasks:claim-seq             STRING the claim token counter
-- KEYS[3]  stellar:tasks:claim-reply:<request> STRING this request's reply, kept for a re-ask
-- KEYS[4..] pairs, in priority order: stellar:queue:<queue> LIST, stellar:tasks:parked-names:<queue> SET
-- ARGV[1]  lease in ms (also how long the reply is kept)
-- ARGV[2]  the claiming node's id
-- ARGV[3]  task key prefix, "stellar:task:"
-- ARGV[4]  at most this many tasks
-- ARGV[5]  parked list prefix, "stellar:tasks:parked:" (a list is "<prefix><queue> <name>")
-- ARGV[6]  how many stale or parked ids one call may pass over at most
-- ARGV[7]  n = how many task names follow
-- ARGV[8 .. 7+n]  the task names this node can run
-- ARGV[8+n ..]    the queue names, in the order of the KEYS pairs
-- Returns a flat array: how many ids it passed over, then 8 entries per claimed task:
--   id, claim token, name, queue, args, attempts (this one included), max attempts, signature.
local saved = redis.call('GET', KEYS[3])
if saved then
  local out = cjson.decode(saved)
  table.insert(out, 1, 0)
  return out
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted = tonumber(ARGV[4])
local skip_limit = tonumber(ARGV[6])
local n_names = tonumber(ARGV[7])
local runnable = {}
for i = 8, 7 + n_names do
  runnable[ARGV[i]] = true
end
local out = {}
local claimed = 0
local skipped = 0

local function take(key, id)
  local token = redis.call('INCR', KEYS[2])
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'state', 'running', 'node', ARGV[2], 'started_at', now, 'claims', token)
  redis.call('HDEL', key, 'parked')
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
  local f = redis.call('HMGET', key, 'name', 'queue', 'args', 'max_attempts', 'sig')
  for _, v in ipairs({ id, token, f[1], f[2], f[3], attempts, tonumber(f[4]), f[5] or '' }) do
    table.insert(out, v)
  end
  claimed = claimed + 1
end

local pair = 0
for i = 4, #KEYS, 2 do
  local queue_key, parked_names = KEYS[i], KEYS[i + 1]
  local queue = ARGV[8 + n_names + pair]
  pair = pair + 1
  -- Parked tasks of names this node can run, first.
  if claimed < wanted then
    for _, name in ipairs(redis.call('SMEMBERS', parked_names)) do
      if runnable[name] then
        local list = ARGV[5] .. queue .. ' ' .. name
        while claimed < wanted and skipped < skip_limit do
          local id = redis.call('RPOP', list)
          if not id then
            redis.call('SREM', parked_names, name)
            break
          end
          local key = ARGV[3] .. id
          if redis.call('HGET', key, 'state') == 'queued' then
            take(key, id)
          else
            skipped = skipped + 1
          end
        end
      end
    end
  end
  while claimed < wanted and skipped < skip_limit do
    local id = redis.call('RPOP', queue_key)
    if not id then
      break
    end
    local key = ARGV[3] .. id
    local f = redis.call('HMGET', key, 'state', 'name')
    if f[1] ~= 'queued' then
      -- A stale id (its task was deleted, replaced or moved) is dropped.
      skipped = skipped + 1
    elseif not runnable[f[2]] then
      redis.call('LPUSH', ARGV[5] .. queue .. ' ' .. f[2], id)
      redis.call('SADD', parked_names, f[2])
      redis.call('HSET', key, 'parked', '1')
      skipped = skipped + 1
    else
      take(key, id)
    end
  end
end
if claimed > 0 then
  redis.call('SET', KEYS[3], cjson.encode(out), 'PX', ARGV[1])
end
table.insert(out, 1, skipped)
return out
