#!lua flags=allow-oom
--[[
  purge_dead: forget dead-lettered jobs that died before a time, with their
  error records, for an operator (`conveyor dead purge`). The oldest go first.

  KEYS[1]   cv:[<ns>:]{<queue>}:dead     zset: envelope -> when it died (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:errors   hash: job id -> last error (JSON)
  KEYS[3]   cv:[<ns>:]{<queue>}:counts   hash: counter name -> count
  ARGV[1]   forget jobs that died before this time (ms since the epoch)
  ARGV[2]   most jobs to forget in this call (1 to 1000)

  Returns: how many jobs were forgotten (call again until it returns 0).

  `allow-oom`: frees memory, adds none.
]]
-- The job id inside an envelope (1-based; envelope::ID_OFFSET, ID_LEN).
local ID_FIRST, ID_LAST = 5, 20
local before, max = tonumber(ARGV[1]), tonumber(ARGV[2])
if not before then
  return redis.error_reply('CVARGS purge needs a time in ms, not ' .. tostring(ARGV[1]))
end
if not max or max < 1 or max > 1000 then
  return redis.error_reply('CVARGS purge takes 1 to 1000 jobs, not ' .. tostring(ARGV[2]))
end
local jobs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. before, 'LIMIT', 0, max)
if #jobs == 0 then
  return 0
end
local ids = {}
for _, envelope in ipairs(jobs) do
  ids[#ids + 1] = string.sub(envelope, ID_FIRST, ID_LAST)
end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('ZREM', KEYS[1], unpack(jobs))
redis.call('HINCRBY', KEYS[3], 'dead_purged', #jobs)
return #jobs
