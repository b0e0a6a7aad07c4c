-- Adds a batch of tasks in one atomic step, each unless a task with the same id has a record (the
-- id is an idempotency key while its record is kept: pending, running, completed within
-- retention, or failed). Every key is built by the caller (src/keys.rs).
-- KEYS[1]  stellar:{tasks}:delayed      ZSET  id -> due time (ms, Redis time)
-- KEYS[2]  stellar:{tasks}:queues       SET   every queue name
-- KEYS[3]  stellar:{tasks}:failed       ZSET  id -> failed time
-- KEYS[4]  stellar:{tasks}:last-slot    HASH  schedule -> its latest enqueued slot (ms)
-- KEYS[5]  stellar:{tasks}:schedules    HASH  a slot of a removed schedule is not enqueued
-- KEYS[6]  stellar:{tasks}:leader       STRING "<node> <epoch>"
-- KEYS[7]  stellar:{tasks}:task:        prefix of the records: KEYS[7] .. id is a HASH
-- KEYS[8]  stellar:{tasks}:queue:       prefix of the ready lists: KEYS[8] .. queue is a LIST
--                                       (LPUSH in, RPOP out)
-- KEYS[9]  stellar:{tasks}:slot:        prefix of the recurring slots' markers (STRING)
-- ARGV[1]  the wake-up channel prefix (a channel, not a key): ARGV[1] .. queue
-- ARGV[2..] 14 fields per task:
--   1 id   2 name   3 queue   4 args (JSON)   5 max attempts
--   6 due time in ms since the epoch, or 0 for now   7 the record's signature
--   8 "1": replace a completed or failed task with this id
--   9 "<schedule>:<slot>" (after KEYS[9]) for a recurring slot, or ""
--   10 how long to remember the slot, in ms   11 the schedule's name   12 the slot's start (ms)
--   13 "<node> <epoch>" of the leader enqueueing the slot
--   14 the enqueue's trace context (W3C traceparent), or ""
-- The keys built from the KEYS[7..9] prefixes share their slot (one hash tag): on a Redis
-- Cluster the script touches one slot, declared by its KEYS.
-- Returns one entry per task: "added", the state of the task holding its id, "slot" when its
-- recurring slot was enqueued before (by any leader), "fenced" when its leader is deposed.
-- Ready tasks wake their queue once per batch.
-- All or none: every task is checked (key types, numbers, outcome) before the first write, so an
-- error (a key of the wrong type planted by hand) fails the whole batch with nothing written; a
-- script that failed half way would keep what it wrote.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Why `key` cannot be written as a `wanted`, if it cannot (it holds another type).
local function wrong_type(key, wanted)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= wanted then
    return 'WRONGTYPE ' .. key .. ' holds a ' .. found .. ', not a ' .. wanted ..
      '; nothing of the batch was written'
  end
  return nil
end

-- The 17 values of the task whose fields start at ARGV[i]: its record, queue list, wake-up
-- channel, the 9 fields up to its `replace` flag, its slot marker ("" for none), and the rest.
local function task_at(i)
  local id, name, queue, args, max, due, sig, replace, slot, remember, schedule, at, leader,
    trace = unpack(ARGV, i, i + 13)
  local slot_key = ''
  if slot ~= '' then
    slot_key = KEYS[9] .. slot
  end
  return KEYS[7] .. id, KEYS[8] .. queue, ARGV[1] .. queue, id, name, queue, args, max, due, sig,
    replace, slot_key, remember, schedule, at, leader, trace
end

local bad = wrong_type(KEYS[1], 'zset') or wrong_type(KEYS[2], 'set') or
  wrong_type(KEYS[3], 'zset') or wrong_type(KEYS[4], 'hash') or wrong_type(KEYS[5], 'hash') or
  wrong_type(KEYS[6], 'string')
if bad then
  return redis.error_reply(bad)
end

-- What the tasks checked so far will write: record key -> its state, and the slots they take.
local planned = {}
local taken = {}
-- Queue lists whose type was checked already.
local lists = {}

-- A whole number of milliseconds greater than 0 (what SET ... PX takes), as a number, or nil.
local function positive_ms(text)
  local n = tonumber(text)
  if n and n > 0 and n == math.floor(n) then
    return n
  end
  return nil
end

-- Why a task is not added, if it is not: its id has a record (`stored`: its state in Redis, or
-- earlier in the batch) that it may not replace, or its recurring slot is fenced off or taken.
-- Writes nothing.
local function refusal(key, stored, replace, slot_key, schedule, leader)
  local state = planned[key] or stored
  if state then
    local replaceable = state == 'completed' or state == 'failed'
    if not (replaceable and replace == '1') then
      return state
    end
  end
  if slot_key == '' then
    return nil
  end
  if redis.call('GET', KEYS[6]) ~= leader then
    return 'fenced'
  end
  if redis.call('HEXISTS', KEYS[5], schedule) == 0 or taken[slot_key] or
      redis.call('EXISTS', slot_key) == 1 then
    return 'slot'
  end
  return nil
end

-- Checks: nothing is written until every task passed. One read per new task (HLEN, with pcall,
-- so a key of another type is reported, not raised), and the state of one that exists.
local out = {}
local added = {}
-- The tasks whose key held something (deleted before the record is written).
local held = {}
for i = 2, #ARGV, 14 do
  local key, queue_key, _, id, _, _, _, _, due, _, replace, slot_key, remember, schedule, at,
    leader = task_at(i)
  -- HLEN first: a new id (the common case) costs one read and no deletion.
  local len = redis.pcall('HLEN', key)
  local stored = false
  if type(len) == 'table' then
    bad = wrong_type(key, 'hash') or ('ERR task ' .. id .. ': ' .. tostring(len.err))
  elseif len > 0 then
    stored = redis.call('HGET', key, 'state')
    held[i] = true
  end
  if not bad and not lists[queue_key] then
    bad = wrong_type(queue_key, 'list')
    lists[queue_key] = true
  end
  if not bad and not tonumber(due) then
    bad = 'ERR task ' .. id .. ': due time ' .. due .. ' is not a number'
  end
  if not bad and slot_key ~= '' and not (tonumber(at) and positive_ms(remember)) then
    bad = 'ERR task ' .. id .. ': slot ' .. at .. ' or its memory ' .. remember .. ' is not a number'
  end
  if bad then
    return redis.error_reply(bad)
  end
  local refused = refusal(key, stored, replace, slot_key, schedule, leader)
  if refused then
    table.insert(out, refused)
  else
    planned[key] = tonumber(due) > now and 'delayed' or 'queued'
    if slot_key ~= '' then
      taken[slot_key] = true
    end
    table.insert(added, i)
    table.insert(out, 'added')
  end
end

-- Writes: per task its record (after deleting what the key held); the failed-set cleanup, queue
-- pushes, delayed entries, queue names and wake-ups once per batch.
local wake = {}
local queues = {}
local pushes = {}
local push_order = {}
local delayed = {}
local ids = {}

-- `cmd key` with `items` as arguments, at most 200 at a time.
local function chunked(cmd, key, items)
  for i = 1, #items, 200 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 199, #items)))
  end
end

for _, i in ipairs(added) do
  local key, queue_key, channel, id, name, queue, args, max, due, sig, _, slot_key, remember,
    schedule, at, _, trace = task_at(i)
  if slot_key ~= '' then
    redis.call('SET', slot_key, '1', 'PX', remember)
    -- A last slot that is not a number (not written here) counts as none.
    if tonumber(at) > (tonumber(redis.call('HGET', KEYS[4], schedule)) or -1) then
      redis.call('HSET', KEYS[4], schedule, at)
    end
  end
  -- Whatever the key held goes: a replaced record, or a hash without a state (fields or an
  -- expiry planted by hand must not survive into the new record).
  if held[i] then
    redis.call('DEL', key)
  end
  -- A failed-set entry of a replaced record, or left by a record that expired or was deleted.
  table.insert(ids, id)
  queues[queue] = true
  local state = 'queued'
  if tonumber(due) > now then
    state = 'delayed'
    table.insert(delayed, due)
    table.insert(delayed, id)
  else
    if not pushes[queue_key] then
      pushes[queue_key] = {}
      table.insert(push_order, queue_key)
    end
    table.insert(pushes[queue_key], id)
    wake[channel] = queue
  end
  -- One HSET, its optional fields spelled out (no table per task).
  if state == 'queued' and trace == '' then
    redis.call('HSET', key, 'id', id, 'name', name, 'queue', queue, 'args', args, 'max_attempts',
      max, 'attempts', 0, 'enqueued_at', now, 'sig', sig, 'state', state)
  elseif state == 'queued' then
    redis.call('HSET', key, 'id', id, 'name', name, 'queue', queue, 'args', args, 'max_attempts',
      max, 'attempts', 0, 'enqueued_at', now, 'sig', sig, 'state', state, 'trace', trace)
  elseif trace == '' then
    redis.call('HSET', key, 'id', id, 'name', name, 'queue', queue, 'args', args, 'max_attempts',
      max, 'attempts', 0, 'enqueued_at', now, 'sig', sig, 'state', state, 'due_at', due)
  else
    redis.call('HSET', key, 'id', id, 'name', name, 'queue', queue, 'args', args, 'max_attempts',
      max, 'attempts', 0, 'enqueued_at', now, 'sig', sig, 'state', state, 'due_at', due, 'trace',
      trace)
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  chunked('ZREM', KEYS[3], ids)
end
chunked('ZADD', KEYS[1], delayed)
for _, queue_key in ipairs(push_order) do
  chunked('LPUSH', queue_key, pushes[queue_key])
end
for queue in pairs(queues) do
  redis.call('SADD', KEYS[2], queue)
end
for channel, queue in pairs(wake) do
  redis.call('PUBLISH', channel, queue)
end
return out
