-- Forgets every connection recorded for a node that still names it as holder: a new run of the
-- node holds none yet, so whatever is recorded belonged to a run that died (SIGKILL).
-- KEYS[1]  stellar:{members}:connections                 HASH  connection id -> node id
-- KEYS[2]  stellar:{members}:node-connections:<node id>  SET   the connections recorded for that node
-- ARGV[1]  node id
-- Returns how many entries were removed.
local removed = 0
for _, connection in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HGET', KEYS[1], connection) == ARGV[1] then
    removed = removed + redis.call('HDEL', KEYS[1], connection)
  end
end
redis.call('DEL', KEYS[2])
return removed
