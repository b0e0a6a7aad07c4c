-- Lists live node records and forgets expired ones, on Redis time.
-- KEYS[1]  stellar:{members}:nodes   ZSET  node id -> expiry (ms, Redis time)
-- KEYS[2]  stellar:{members}:node:   the prefix of node records (HASH per id): the script reads
--          KEYS[2] .. <id> for each id of KEYS[1], all in KEYS[2]'s slot (the `{members}` tag)
-- Returns a flat array: the Redis time in ms, then id, record, last_seen ms for each live node.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {tostring(now)}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = redis.call('HMGET', KEYS[2] .. id, 'info', 'last_seen')
  if record[1] then
    table.insert(out, id)
    table.insert(out, record[1])
    table.insert(out, tostring(record[2]))
  end
end
return out
