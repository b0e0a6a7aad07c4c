-- Gives up the scheduler leadership, only if this node holds it.
-- KEYS[1]  stellar:{tasks}:leader
-- ARGV[1]  node id
-- Returns 1 resigned, 0 not the leader.
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^(%S+) ') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
