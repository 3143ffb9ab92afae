#!lua flags=allow-oom
--[[
  release: give jobs of a lease back unstarted (a worker shutting down), to the
  head of ready, in slot order. Not counted as an attempt.

  KEYS[1]   cv:[<ns>:]{<queue>}:lease:<token>   hash: slot -> envelope
  KEYS[2]   cv:[<ns>:]{<queue>}:leases          zset: lease token -> deadline (ms)
  KEYS[3]   cv:[<ns>:]{<queue>}:ready           list of envelopes
  KEYS[4]   cv:[<ns>:]{<queue>}:wake            list of at most one token for idle workers
  KEYS[5]   cv:[<ns>:]{<queue>}:progress        hash: lease token -> slot running
  ARGV[1]   the lease token
  ARGV[2..] slots to give back, in ascending order

  Returns: how many jobs went back (slots no longer leased are ignored).

  `allow-oom`: moves jobs, adds none; a shutdown must work on a full Redis.
]]
local back = {}
for i = #ARGV, 2, -1 do
  local envelope = redis.call('HGET', KEYS[1], ARGV[i])
  if envelope then
    redis.call('HDEL', KEYS[1], ARGV[i])
    back[#back + 1] = envelope
  end
end
if #back > 0 then
  redis.call('LPUSH', KEYS[3], unpack(back))
  redis.call('RPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], -1, -1)
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
end
return #back
