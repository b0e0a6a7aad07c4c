-- Takes or renews the scheduler leadership: a short lease with a fencing epoch.
-- KEYS[1]  stellar:tasks:leader        STRING  "<node id> <epoch>", with a TTL
-- KEYS[2]  stellar:tasks:leader-epoch  STRING  counter, bumped on every new leadership
-- ARGV[1]  node id
-- ARGV[2]  lease in ms
-- Returns the epoch when this node leads (new or renewed), 0 when another node does.
local current = redis.call('GET', KEYS[1])
if current then
  local holder, epoch = string.match(current, '^(%S+) (%d+)$')
  if holder ~= ARGV[1] then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(epoch)
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return epoch
