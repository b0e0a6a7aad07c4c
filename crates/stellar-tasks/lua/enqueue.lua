-- Adds a task, unless a task with the same id has a record (the id is an idempotency key while
-- its record is kept: pending, running, completed within retention, or failed).
-- KEYS[1]  stellar:task:<id>          HASH  the task record
-- KEYS[2]  stellar:queue:<queue>      LIST  ids ready to run (LPUSH in, RPOP out: FIFO)
-- KEYS[3]  stellar:tasks:delayed      ZSET  id -> due time (ms, Redis time)
-- KEYS[4]  stellar:tasks:queues       SET   every queue name
-- KEYS[5]  stellar:tasks:failed       ZSET  id -> failed time
-- ARGV[1]  id
-- ARGV[2]  name
-- ARGV[3]  queue
-- ARGV[4]  args (JSON)
-- ARGV[5]  max attempts
-- ARGV[6]  due time in ms since the epoch, or 0 for now
-- ARGV[7]  the wake-up channel of the queue
-- ARGV[8]  the record's signature
-- ARGV[9]  "1": replace a completed or failed task with this id
-- KEYS[6]  (optional) stellar:tasks:slot:<schedule>:<slot>  STRING  a recurring slot already enqueued
-- KEYS[7]  (with KEYS[6]) stellar:tasks:last-slot  HASH  schedule -> its latest enqueued slot (ms)
-- KEYS[8]  (with KEYS[6]) stellar:tasks:schedules  HASH  a slot of a removed schedule is not enqueued
-- KEYS[9]  (with KEYS[6]) stellar:tasks:leader     STRING "<node> <epoch>"
-- ARGV[10] (with KEYS[6]) how long to remember the slot, in ms
-- ARGV[11] (with KEYS[6]) the schedule's name
-- ARGV[12] (with KEYS[6]) the slot's start, ms since the epoch
-- ARGV[13] (with KEYS[6]) "<node> <epoch>" of the leader enqueueing the slot
-- Returns { 1 } when added, { 0, state } when a task with this id exists, { 0, "slot" } when this
-- recurring slot was enqueued before (by any leader), { 0, "fenced" } when the leader is deposed.
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  local replaceable = state == 'completed' or state == 'failed'
  if not (replaceable and ARGV[9] == '1') then
    return { 0, state }
  end
end
if KEYS[6] then
  if redis.call('GET', KEYS[9]) ~= ARGV[13] then
    return { 0, 'fenced' }
  end
  if redis.call('HEXISTS', KEYS[8], ARGV[11]) == 0 or not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[10]) then
    return { 0, 'slot' }
  end
  local last = tonumber(redis.call('HGET', KEYS[7], ARGV[11]) or '0')
  if tonumber(ARGV[12]) > last then
    redis.call('HSET', KEYS[7], ARGV[11], ARGV[12])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = tonumber(ARGV[6])
-- A replaced record, or a failed-set entry left by a record that expired or was deleted.
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'queue', ARGV[3], 'args', ARGV[4],
  'max_attempts', ARGV[5], 'attempts', 0, 'enqueued_at', now, 'sig', ARGV[8])
redis.call('SADD', KEYS[4], ARGV[3])
if due > now then
  redis.call('HSET', KEYS[1], 'state', 'delayed', 'due_at', due)
  redis.call('ZADD', KEYS[3], due, ARGV[1])
else
  redis.call('HSET', KEYS[1], 'state', 'queued')
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('PUBLISH', ARGV[7], ARGV[3])
end
return { 1 }
