-- Claims up to ARGV[3] of the oldest ready tasks this node can run, from the queues in priority
-- order, atomically leasing each one under a claim token never used before (a global counter, so
-- re-enqueueing an id never repeats a token). A ready task of a name the node cannot run is parked
-- (no attempt counted) until a node that can run it claims it; such parked tasks come first.
-- KEYS[1]  stellar:{tasks}:inflight              ZSET   id -> lease deadline (ms, Redis time)
-- KEYS[2]  stellar:{tasks}:claim-seq             STRING the claim token counter
-- KEYS[3]  stellar:{tasks}:claim-reply:<request> STRING "id token" lines of this request, for a re-ask
-- KEYS[4]  stellar:{tasks}:task:                 prefix of the records (KEYS[4] .. id, HASH)
-- KEYS[5]  stellar:{tasks}:parked:               prefix of the parked lists (a list is
--                                                KEYS[5] .. "<queue> <name>")
-- KEYS[6..] pairs, in priority order: stellar:{tasks}:queue:<queue> LIST,
--           stellar:{tasks}:parked-names:<queue> SET
-- (Every key shares the `{tasks}` hash tag, so the script touches one Redis Cluster slot.)
-- ARGV[1]  lease in ms
-- ARGV[2]  the claiming node's id
-- ARGV[3]  at most this many tasks
-- ARGV[4]  how many stale or parked ids one call may pass over at most
-- ARGV[5]  n = how many task names follow
-- ARGV[6 .. 5+n]  the task names this node can run
-- ARGV[6+n .. 5+n+q] the q queue names, in the order of the KEYS pairs
-- ARGV[6+n+q]      how long the reply (ids and tokens) is kept for a re-ask, in ms
-- Returns a flat array: how many ids it passed over, then 10 entries per claimed task:
--   id, claim token, name, queue, args, attempts (this one included), max attempts, signature,
--   how long it waited ready, in ms (since its enqueue or due time, to its claim), and the trace
--   context (W3C traceparent) of its enqueue, or "".
local previous = redis.call('GET', KEYS[3])
if previous then
  -- A re-ask: the same tasks, rebuilt from their records, those still held by this claim.
  local out = { 0 }
  for entry in string.gmatch(previous, '[^\n]+') do
    local id, token = string.match(entry, '^(.*) (%d+)$')
    local key = KEYS[4] .. id
    local f = redis.call('HMGET', key, 'claims', 'state', 'name', 'queue', 'args', 'attempts',
      'max_attempts', 'sig', 'started_at', 'enqueued_at', 'due_at', 'trace')
    if f[1] == token and f[2] == 'running' then
      local started = tonumber(f[9]) or 0
      local since = math.max(tonumber(f[10]) or started, tonumber(f[11]) or 0)
      for _, v in ipairs({ id, tonumber(token), f[3] or '', f[4] or '', f[5] or '',
          tonumber(f[6]) or 0, tonumber(f[7]) or 0, f[8] or '', math.max(started - since, 0),
          f[12] or '' }) do
        table.insert(out, v)
      end
    end
  end
  return out
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted = tonumber(ARGV[3])
local skip_limit = tonumber(ARGV[4])
local n_names = tonumber(ARGV[5])
local runnable = {}
for i = 6, 5 + n_names do
  runnable[ARGV[i]] = true
end
-- Tokens are the counter's next values: read once here (a counter that is not a whole number,
-- or too large to count on exactly, fails the call before anything is written) and moved past
-- the claimed ones at the end. A plain read: a claim that takes nothing writes nothing.
local base = redis.call('GET', KEYS[2]) or '0'
if not string.match(base, '^%d+$') or tonumber(base) > 2 ^ 53 - 1 - wanted then
  return redis.error_reply('ERR the claim counter ' .. KEYS[2] .. ' holds ' .. base ..
    ', not a count of claims')
end
base = tonumber(base)
local out = {}
local saved = {}
local leases = {}
local claimed = 0
local skipped = 0

-- Fields are coerced, never trusted to be well formed: a malformed record (someone wrote it by
-- hand) must neither stop the script half way nor misalign the reply; its signature check fails.
-- One read per task (`queued`), one write (`take`); the lease deadlines go in one ZADD at the end.
local function take(key, id, f)
  claimed = claimed + 1
  local token = base + claimed
  local attempts = (tonumber(f[4]) or 0) + 1
  redis.call('HSET', key, 'state', 'running', 'node', ARGV[2], 'started_at', now, 'claims', token,
    'attempts', attempts)
  -- A new attempt starts without the progress the previous one reported.
  if f[11] or f[12] then
    redis.call('HDEL', key, 'parked', 'progress')
  end
  table.insert(leases, now + tonumber(ARGV[1]))
  table.insert(leases, id)
  local since = math.max(tonumber(f[8]) or now, tonumber(f[9]) or 0)
  for _, v in ipairs({ id, token, f[2], f[3], f[5] or '', attempts, tonumber(f[6]) or 0,
      f[7] or '', math.max(now - since, 0), f[10] or '' }) do
    table.insert(out, v)
  end
  table.insert(saved, id .. ' ' .. string.format('%d', token))
end

-- The record of `id` (its fields, as `take` reads them) if it is a queued task of `queue` (and of
-- `name`, for a parked list); nil for a stale id (deleted, replaced, moved, enqueued again
-- elsewhere since, or taken earlier in this call: its state is running now) and for a key that
-- is not a record (read with pcall: an error half way would strand what this call popped and
-- took before it, as Redis keeps a failed script's writes).
local function queued(key, queue, name)
  local f = redis.pcall('HMGET', key, 'state', 'name', 'queue', 'attempts', 'args',
    'max_attempts', 'sig', 'enqueued_at', 'due_at', 'trace', 'parked', 'progress')
  if f.err or f[1] ~= 'queued' or not f[2] or f[3] ~= queue or (name and f[2] ~= name) then
    return nil
  end
  return f
end

-- Up to what this call still wants, from the tail of `list`, in one command; an empty table when
-- the list is empty.
local function pop(list)
  return redis.call('RPOP', list, wanted - claimed) or {}
end

local pair = 0
for i = 6, #KEYS, 2 do
  local queue_key, parked_names = KEYS[i], KEYS[i + 1]
  local queue = ARGV[6 + n_names + pair]
  pair = pair + 1
  -- Parked tasks of names this node can run, first. The node's own names are looked up when the
  -- set is large (it holds any name ever parked in this queue).
  local parked = claimed < wanted and redis.call('SCARD', parked_names) or 0
  if parked > 0 then
    local names = {}
    if parked <= 64 then
      names = redis.call('SMEMBERS', parked_names)
    else
      for i = 6, 5 + n_names do
        if redis.call('SISMEMBER', parked_names, ARGV[i]) == 1 then
          table.insert(names, ARGV[i])
        end
      end
    end
    for _, name in ipairs(names) do
      if runnable[name] then
        local list = KEYS[5] .. queue .. ' ' .. name
        while claimed < wanted and skipped < skip_limit do
          local ids = pop(list)
          if #ids == 0 then
            redis.call('SREM', parked_names, name)
            break
          end
          for _, id in ipairs(ids) do
            local key = KEYS[4] .. id
            local f = queued(key, queue, name)
            if f then
              take(key, id, f)
            else
              skipped = skipped + 1
            end
          end
        end
      end
    end
  end
  while claimed < wanted and skipped < skip_limit do
    local ids = pop(queue_key)
    if #ids == 0 then
      break
    end
    -- Every id popped is dealt with, even past the skip budget: none is put back.
    for _, id in ipairs(ids) do
      local key = KEYS[4] .. id
      local f = queued(key, queue, nil)
      if not f then
        -- A stale id is dropped.
        skipped = skipped + 1
      elseif not runnable[f[2]] then
        -- Parked (pcall: a parked list planted with another type sends the id back to its
        -- queue instead of failing the call with ids popped and not yet dealt with).
        local parked_list = KEYS[5] .. queue .. ' ' .. f[2]
        local pushed = redis.pcall('LPUSH', parked_list, id)
        if type(pushed) == 'table' and pushed.err then
          redis.call('RPUSH', queue_key, id)
        else
          redis.call('SADD', parked_names, f[2])
          redis.call('HSET', key, 'parked', '1')
        end
        skipped = skipped + 1
      else
        take(key, id, f)
      end
    end
  end
end
if claimed > 0 then
  redis.call('INCRBY', KEYS[2], claimed)
  for i = 1, #leases, 200 do
    redis.call('ZADD', KEYS[1], unpack(leases, i, math.min(i + 199, #leases)))
  end
  redis.call('SET', KEYS[3], table.concat(saved, '\n'), 'PX', ARGV[6 + n_names + pair])
end
table.insert(out, 1, skipped)
return out
