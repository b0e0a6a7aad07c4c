-- Adds to a counter entry, creating it at 0 (no TTL) when absent; honours locks like save.
-- KEYS[1]  <prefix>{<key>}        HASH  value (a JSON integer), created_at
-- KEYS[2]  <lock prefix>{<key>}
--          (both carry the hash tag {<key>}: one slot on Redis Cluster)
-- ARGV[1]  amount (may be negative)
-- ARGV[2]  the caller's lock token, or ""
-- Returns { 1, new value }, { 0 } when locked by someone else, { -1 } when the key holds another
-- Redis type than a hash (a list, or a string another client wrote), { -2 } when its value is not
-- an integer, { -3 } when the sum would overflow (nothing changes). Any other refusal (OOM,
-- READONLY, MISCONF) is raised as the Redis error it is, never reported as bad data.
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then
  return { 0 }
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'hash' then
  return { -1 }
end
if redis.call('HEXISTS', KEYS[1], 'value') == 0 then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'value', 0, 'created_at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local added = redis.pcall('HINCRBY', KEYS[1], 'value', ARGV[1])
if type(added) == 'table' and added['err'] then
  if string.find(added['err'], 'overflow', 1, true) then
    return { -3 }
  end
  if string.find(added['err'], 'not an integer', 1, true) then
    return { -2 }
  end
  return redis.error_reply(added['err'])
end
return { 1, added }
