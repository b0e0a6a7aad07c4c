-- Moves due delayed tasks to their queues. Atomic: a task is in exactly one place before and after,
-- so a crash loses nothing and concurrent promoters never duplicate.
-- KEYS[1]  stellar:{tasks}:delayed
-- KEYS[2]  task key prefix, "stellar:{tasks}:task:"
-- KEYS[3]  queue key prefix, "stellar:{tasks}:queue:"
-- ARGV[1]  wake-up channel prefix (a channel, not a key)
-- ARGV[2]  at most this many tasks per call
-- Returns how many tasks were promoted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
  return 0
end
-- Per task one read and one write; pushes and wake-ups once per queue. Nothing can fail half way
-- (Redis keeps a failed script's writes): a record of another type is dropped as stale, and a
-- task whose queue key holds another type stays delayed.
local pushes = {}
local order = {}
local lists = {}
local done = {}
for _, id in ipairs(ids) do
  local key = KEYS[2] .. id
  local f = redis.pcall('HMGET', key, 'queue', 'state')
  local queue = not f.err and f[1]
  if queue and f[2] == 'delayed' then
    local list = KEYS[3] .. queue
    if lists[list] == nil then
      local found = redis.call('TYPE', list)['ok']
      lists[list] = found == 'none' or found == 'list'
    end
    if lists[list] then
      redis.call('HSET', key, 'state', 'queued')
      if not pushes[queue] then
        pushes[queue] = {}
        table.insert(order, queue)
      end
      table.insert(pushes[queue], id)
      table.insert(done, id)
    end
  else
    -- Stale: deleted, moved, or not a record.
    table.insert(done, id)
  end
end
for i = 1, #done, 200 do
  redis.call('ZREM', KEYS[1], unpack(done, i, math.min(i + 199, #done)))
end
for _, queue in ipairs(order) do
  local list = pushes[queue]
  for i = 1, #list, 200 do
    redis.call('LPUSH', KEYS[3] .. queue, unpack(list, i, math.min(i + 199, #list)))
  end
  redis.call('PUBLISH', ARGV[1] .. queue, queue)
end
return #done
