-- Removes one node's membership record at once (graceful stop), unless another run of the node
-- (another incarnation) has taken it over since.
-- KEYS[1]  stellar:{members}:nodes          ZSET
-- KEYS[2]  stellar:{members}:node:<id>      HASH
-- ARGV[1]  node id
-- ARGV[2]  the leaving run's incarnation (decimal)
-- Returns 1 if the record is gone, 0 if another run holds it (left alone).
local holder = redis.call('HGET', KEYS[2], 'incarnation')
if holder and holder ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
