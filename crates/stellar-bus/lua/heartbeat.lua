-- Registers or renews one node's membership record, on Redis time, unless another run of the
-- node (another incarnation) holds the id.
-- KEYS[1]  stellar:{members}:nodes          ZSET  node id -> expiry (ms, Redis time)
-- KEYS[2]  stellar:{members}:node:<id>      HASH  info (the signed record), last_seen (ms), incarnation
-- ARGV[1]  node id
-- ARGV[2]  the signed record (JSON)
-- ARGV[3]  ttl in ms
-- ARGV[4]  the writing run's incarnation (decimal)
-- ARGV[5]  'own': write only if the id is free, held by ARGV[4] or by ARGV[6];
--          'force': write whatever holds it (its record did not verify)
-- ARGV[6]  an incarnation this run takes over (supervised handover), or ''
-- Returns {'1', now} when written, {'0', now, holder incarnation, holder record} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] ~= 'force' then
  local held = redis.call('HMGET', KEYS[2], 'incarnation', 'info')
  local holder = held[1]
  if holder and holder ~= ARGV[4] and (ARGV[6] == '' or holder ~= ARGV[6]) then
    return {'0', tostring(now), holder, held[2] or ''}
  end
end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'info', ARGV[2], 'last_seen', now, 'incarnation', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
return {'1', tostring(now)}
