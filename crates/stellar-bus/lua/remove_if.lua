-- Removes one node's membership record if it is still exactly the record read (compare and
-- delete): a stale or unreadable record found by a reader, never one renewed since.
-- KEYS[1]  stellar:{members}:nodes          ZSET
-- KEYS[2]  stellar:{members}:node:<id>      HASH
-- ARGV[1]  node id
-- ARGV[2]  the record as read
-- Returns 1 if removed, 0 if the record changed or is gone.
if redis.call('HGET', KEYS[2], 'info') ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
