-- Takes a lock if free (or refreshes it if the same token holds it) and issues its fencing token.
-- Fencing tokens grow forever without a counter per key that lives forever: a new acquisition
-- gets max(previous + 1, Redis time in microseconds), so the counter key may expire a day after
-- its last use and the next token is still above every earlier one.
-- KEYS[1]  <lock prefix>{<key>}              STRING  the holder's token, with a TTL
-- KEYS[2]  <lock prefix>{<key>}\x1ffence     STRING  the last fencing token, kept a day
--          (both carry the hash tag {<key>}: one slot on Redis Cluster)
-- ARGV[1]  token
-- ARGV[2]  ttl in ms
-- Returns the fencing token of this acquisition, or 0 when another token holds the lock.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if holder and previous > 0 then
  return previous
end
local t = redis.call('TIME')
local fence = math.max(previous + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', 86400000)
return fence
