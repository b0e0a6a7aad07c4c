-- Forgets which node holds a connection, only if that node still holds it.
-- KEYS[1]  stellar:{members}:connections                 HASH  connection id -> node id
-- KEYS[2]  stellar:{members}:node-connections:<node id>  SET   the connections recorded for that node
-- ARGV[1]  connection id
-- ARGV[2]  node id
-- Returns 1 if removed, 0 if absent or held by another node.
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
