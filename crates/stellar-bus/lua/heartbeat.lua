-- Registers or renews one node's membership record, on Redis time.
-- KEYS[1]  stellar:nodes          ZSET  node id -> expiry (ms, Redis time)
-- KEYS[2]  stellar:node:<id>      HASH  info (the signed record), last_seen (ms)
-- ARGV[1]  node id
-- ARGV[2]  the signed record (JSON)
-- ARGV[3]  ttl in ms
-- Returns the Redis time in ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'info', ARGV[2], 'last_seen', now)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
return now
