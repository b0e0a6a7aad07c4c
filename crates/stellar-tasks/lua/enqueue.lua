-- Adds a task, unless a task with the same id is still pending (idempotency key).
-- KEYS[1]  stellar:task:<id>          HASH  the task record
-- KEYS[2]  stellar:queue:<queue>      LIST  ids ready to run (LPUSH in, RPOP out: FIFO)
-- KEYS[3]  stellar:tasks:delayed      ZSET  id -> due time (ms, Redis time)
-- KEYS[4]  stellar:tasks:queues       SET   every queue name
-- ARGV[1]  id
-- ARGV[2]  name
-- ARGV[3]  queue
-- ARGV[4]  args (JSON)
-- ARGV[5]  max attempts
-- ARGV[6]  due time in ms since the epoch, or 0 for now
-- ARGV[7]  the wake-up channel of the queue
-- KEYS[5]  (optional) stellar:tasks:slot:<schedule>:<slot>  STRING  a recurring slot already enqueued
-- ARGV[8]  (with KEYS[5]) how long to remember the slot, in ms
-- KEYS[6]  (with KEYS[5]) stellar:tasks:last-slot  HASH  schedule -> its latest enqueued slot (ms)
-- ARGV[9]  (with KEYS[5]) the schedule's name
-- ARGV[10] (with KEYS[5]) the slot's start, ms since the epoch
-- KEYS[7]  (with KEYS[5]) stellar:tasks:schedules  HASH  a slot of a removed schedule is not enqueued
-- Returns { 1 } when added, { 0, state } when a pending task already has this id, { 0, "slot" }
-- when this recurring slot was enqueued before (by any leader).
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' or state == 'delayed' or state == 'running' then
  return { 0, state }
end
if KEYS[5] then
  if redis.call('HEXISTS', KEYS[7], ARGV[9]) == 0 or not redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[8]) then
    return { 0, 'slot' }
  end
  local last = tonumber(redis.call('HGET', KEYS[6], ARGV[9]) or '0')
  if tonumber(ARGV[10]) > last then
    redis.call('HSET', KEYS[6], ARGV[9], ARGV[10])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = tonumber(ARGV[6])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'queue', ARGV[3], 'args', ARGV[4],
  'max_attempts', ARGV[5], 'attempts', 0, 'claims', 0, 'enqueued_at', now)
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
