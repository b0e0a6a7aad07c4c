-- Reads one entry and records the read time; never rewrites the value.
-- KEYS[1]  <prefix>{<key>}        HASH  value, created_at, read_at
-- ARGV[1]  new ttl in ms (sliding expiry), or "" to keep the current one
-- Returns nil when absent, else { value, created_at, previous read_at or "", pttl ms, now ms }.
local fields = redis.call('HMGET', KEYS[1], 'value', 'created_at', 'read_at')
if not fields[1] then
  return nil
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'read_at', now)
if ARGV[1] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return { fields[1], fields[2] or '', fields[3] or '', redis.call('PTTL', KEYS[1]), now }
