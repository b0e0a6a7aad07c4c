-- Adds a batch of tasks in one atomic step, each unless a task with the same id has a record (the
-- id is an idempotency key while its record is kept: pending, running, completed within
-- retention, or failed). Every key is built by the caller (src/keys.rs).
-- KEYS[1]  stellar:tasks:delayed      ZSET  id -> due time (ms, Redis time)
-- KEYS[2]  stellar:tasks:queues       SET   every queue name
-- KEYS[3]  stellar:tasks:failed       ZSET  id -> failed time
-- KEYS[4]  stellar:tasks:last-slot    HASH  schedule -> its latest enqueued slot (ms)
-- KEYS[5]  stellar:tasks:schedules    HASH  a slot of a removed schedule is not enqueued
-- KEYS[6]  stellar:tasks:leader       STRING "<node> <epoch>"
-- ARGV     16 fields per task:
--   1 stellar:task:<id> (HASH, the record)   2 stellar:queue:<queue> (LIST: LPUSH in, RPOP out)
--   3 the queue's wake-up channel             4 id   5 name   6 queue   7 args (JSON)
--   8 max attempts   9 due time in ms since the epoch, or 0 for now   10 the record's signature
--   11 "1": replace a completed or failed task with this id
--   12 stellar:tasks:slot:<schedule>:<slot> (STRING) for a recurring slot, or ""
--   13 how long to remember the slot, in ms   14 the schedule's name   15 the slot's start (ms)
--   16 "<node> <epoch>" of the leader enqueueing the slot
-- Returns one entry per task: "added", the state of the task holding its id, "slot" when its
-- recurring slot was enqueued before (by any leader), "fenced" when its leader is deposed.
-- Ready tasks wake their queue once per batch.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function refusal(key, replace, slot_key, remember, schedule, at, leader)
  local state = redis.call('HGET', key, 'state')
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
  if redis.call('HEXISTS', KEYS[5], schedule) == 0 or not redis.call('SET', slot_key, '1', 'NX', 'PX', remember) then
    return 'slot'
  end
  if tonumber(at) > tonumber(redis.call('HGET', KEYS[4], schedule) or '0') then
    redis.call('HSET', KEYS[4], schedule, at)
  end
  return nil
end

local out = {}
local wake = {}
local queues = {}
for i = 1, #ARGV, 16 do
  local key, queue_key, channel, id, name, queue, args, max, due, sig, replace, slot_key, remember,
    schedule, at, leader = unpack(ARGV, i, i + 15)
  local refused = refusal(key, replace, slot_key, remember, schedule, at, leader)
  if refused then
    table.insert(out, refused)
  else
    -- A replaced record, or a failed-set entry left by a record that expired or was deleted.
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[3], id)
    queues[queue] = true
    if tonumber(due) > now then
      redis.call('HSET', key, 'id', id, 'name', name, 'queue', queue, 'args', args,
        'max_attempts', max, 'attempts', 0, 'enqueued_at', now, 'sig', sig, 'state', 'delayed',
        'due_at', due)
      redis.call('ZADD', KEYS[1], due, id)
    else
      redis.call('HSET', key, 'id', id, 'name', name, 'queue', queue, 'args', args,
        'max_attempts', max, 'attempts', 0, 'enqueued_at', now, 'sig', sig, 'state', 'queued')
      redis.call('LPUSH', queue_key, id)
      wake[channel] = queue
    end
    table.insert(out, 'added')
  end
end
for queue in pairs(queues) do
  redis.call('SADD', KEYS[2], queue)
end
for channel, queue in pairs(wake) do
  redis.call('PUBLISH', channel, queue)
end
return out
