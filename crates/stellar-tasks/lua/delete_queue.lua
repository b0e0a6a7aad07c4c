-- Deletes up to ARGV[2] waiting tasks of a queue (its list first, then its parked lists); when
-- nothing is left, forgets the queue. Bounded work per call: the caller repeats while it returns
-- ARGV[2].
-- KEYS[1]  stellar:{tasks}:queue:<queue>               LIST
-- KEYS[2]  stellar:{tasks}:queues                SET
-- KEYS[3]  stellar:{tasks}:parked-names:<queue>  SET  names with parked tasks in this queue
-- KEYS[4]  task key prefix, "stellar:{tasks}:task:"
-- KEYS[5]  parked list prefix, "stellar:{tasks}:parked:"
-- ARGV[1]  the queue name
-- ARGV[2]  at most this many ids per call
-- Returns { how many ids were taken off, how many of them were tasks deleted (the rest were stale) }.
local batch = tonumber(ARGV[2])
local taken = 0
local deleted = 0
local function drop(list)
  while taken < batch do
    local id = redis.call('RPOP', list)
    if not id then
      return true
    end
    taken = taken + 1
    -- Only a queued task of this queue: the id may have been deleted and enqueued elsewhere since.
    local f = redis.call('HMGET', KEYS[4] .. id, 'state', 'queue')
    if f[1] == 'queued' and f[2] == ARGV[1] then
      redis.call('DEL', KEYS[4] .. id)
      deleted = deleted + 1
    end
  end
  return false
end
local empty = drop(KEYS[1])
if empty then
  for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if drop(KEYS[5] .. ARGV[1] .. ' ' .. name) then
      redis.call('SREM', KEYS[3], name)
    else
      empty = false
      break
    end
  end
end
if empty then
  redis.call('SREM', KEYS[2], ARGV[1])
end
return { taken, deleted }
