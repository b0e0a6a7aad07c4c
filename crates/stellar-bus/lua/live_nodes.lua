-- Lists live node records and forgets expired ones, on Redis time.
-- KEYS[1]  stellar:nodes          ZSET  node id -> expiry (ms, Redis time)
-- ARGV[1]  the prefix of node records, "stellar:node:"
-- Returns a flat array: the Redis time in ms, then id, record, last_seen ms for each live node.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {tostring(now)}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = redis.call('HMGET', ARGV[1] .. id, 'info', 'last_seen')
  if record[1] then
    table.insert(out, id)
    table.insert(out, record[1])
    table.insert(out, tostring(record[2]))
  end
end
return out
