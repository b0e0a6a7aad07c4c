-- Removes one node's membership record at once (graceful stop).
-- KEYS[1]  stellar:nodes          ZSET
-- KEYS[2]  stellar:node:<id>      HASH
-- ARGV[1]  node id
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
