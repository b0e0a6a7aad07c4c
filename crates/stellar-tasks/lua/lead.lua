-- Takes or renews the scheduler leadership: a short lease with a fencing epoch.
-- KEYS[1]  stellar:{tasks}:leader        STRING  "<node id> <epoch>", with a TTL
-- KEYS[2]  stellar:{tasks}:leader-epoch  STRING  counter, bumped on every new leadership
-- ARGV[1]  node id
-- ARGV[2]  lease in ms
-- Returns the epoch when this node leads (new or renewed), 0 when another node does.
-- A leader key no node could have written (no TTL, a TTL far past any lease, or a malformed
-- value: someone wrote it by hand) is ignored and replaced, so it cannot stop recurring tasks.
-- The ceiling is fixed (not the caller's lease), so a node with a shorter lease never deposes a
-- genuine leader.
local ceiling = 60000
local current = redis.call('GET', KEYS[1])
if current then
  local holder, epoch = string.match(current, '^(%S+) (%d+)$')
  local ttl = redis.call('PTTL', KEYS[1])
  if not holder or ttl < 0 or ttl > ceiling then
    redis.call('DEL', KEYS[1])
    current = nil
  end
end
if current then
  local holder, epoch = string.match(current, '^(%S+) (%d+)$')
  if holder ~= ARGV[1] then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(epoch)
end
-- Not INCR: a counter someone overwrote with text (or a huge number) must not stop every node
-- from ever leading again.
local epoch = math.floor(tonumber(redis.call('GET', KEYS[2]) or '0') or 0) + 1
if epoch < 1 or epoch > 1e15 then
  epoch = 1
end
redis.call('SET', KEYS[2], string.format('%d', epoch))
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%d', epoch), 'PX', ARGV[2])
return epoch
