#!lua flags=allow-oom
--[[
  replay_dead: move dead-lettered jobs back to the tail of ready, oldest
  first, for an operator who fixed the cause. Each gets a fresh set of
  attempts (the attempt count, bytes 29..32 of the envelope, is set to 0);
  its stage stamps keep the history of the attempts before.

  KEYS[1]   cv:[<ns>:]{<queue>}:dead    zset: envelope -> when it died (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:ready   list of envelopes
  ARGV[1]   most jobs to move (1 to 1000)

  Returns: how many jobs moved.

  `allow-oom`: moves jobs, adds none.
]]
-- The envelope's attempt count, a big-endian u32 from ATTEMPT_FIRST (1-based;
-- envelope::ATTEMPT_OFFSET).
local ATTEMPT_FIRST = 29
local max = tonumber(ARGV[1])
if not max or max < 1 or max > 1000 then
  return redis.error_reply('CVARGS replay takes 1 to 1000 jobs, not ' .. tostring(ARGV[1]))
end
local jobs = redis.call('ZRANGE', KEYS[1], 0, max - 1)
if #jobs > 0 then
  redis.call('ZREM', KEYS[1], unpack(jobs))
  local fresh = {}
  for i, envelope in ipairs(jobs) do
    fresh[i] = string.sub(envelope, 1, ATTEMPT_FIRST - 1) .. struct.pack('>I4', 0)
      .. string.sub(envelope, ATTEMPT_FIRST + 4)
  end
  redis.call('RPUSH', KEYS[2], unpack(fresh))
end
return #jobs
