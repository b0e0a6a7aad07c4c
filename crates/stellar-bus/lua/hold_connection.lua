-- Records that a node holds a connection, and indexes it under that node (so a restarted run of
-- the node can forget what its dead predecessor held).
-- KEYS[1]  stellar:{members}:connections                 HASH  connection id -> node id
-- KEYS[2]  stellar:{members}:node-connections:<node id>  SET   the connections recorded for that node
-- ARGV[1]  connection id
-- ARGV[2]  node id
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
