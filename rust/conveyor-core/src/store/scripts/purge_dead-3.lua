#!lua flags=allow-oom
--[[
  purge_dead: forget dead-lettered jobs past a retention, oldest first, with
  their error records. Workers run it after a settle that dead-letters (the
  configured retention, so failures cannot fill Redis); operators through
  `conveyor dead purge`.

  KEYS[1]   cv:[<ns>:]{<queue>}:dead     zset: envelope -> when it died (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:errors   hash: job id -> last error (JSON)
  KEYS[3]   cv:[<ns>:]{<queue>}:counts   hash: counter name -> count
  ARGV[1]   forget jobs dead for longer than this many ms (Redis' clock)
  ARGV[2]   and the oldest beyond this many jobs
  ARGV[3]   most jobs to forget in this call (1 to 1000)
  ARGV[4]   the counter to add them to (`dead_trimmed` or `dead_purged`)

  Returns: how many jobs were forgotten (call again until it returns 0).

  `allow-oom`: frees memory, adds none.
]]
-- The job id inside an envelope (1-based; envelope::ID_OFFSET, ID_LEN).
local ID_FIRST, ID_LAST = 5, 20
local age, keep, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not age or age < 0 or not keep or keep < 0 then
  return redis.error_reply('CVARGS purge needs an age in ms and a count, not '
    .. tostring(ARGV[1]) .. ', ' .. tostring(ARGV[2]))
end
if not max or max < 1 or max > 1000 then
  return redis.error_reply('CVARGS purge takes 1 to 1000 jobs, not ' .. tostring(ARGV[3]))
end
if ARGV[4] ~= 'dead_trimmed' and ARGV[4] ~= 'dead_purged' then
  return redis.error_reply('CVARGS purge counts dead_trimmed or dead_purged, not ' .. tostring(ARGV[4]))
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local jobs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - age), 'LIMIT', 0, max)
local excess = redis.call('ZCARD', KEYS[1]) - #jobs - keep
if excess > 0 and #jobs < max then
  local more = redis.call('ZRANGE', KEYS[1], #jobs, #jobs + math.min(excess, max - #jobs) - 1)
  for _, envelope in ipairs(more) do
    jobs[#jobs + 1] = envelope
  end
end
if #jobs == 0 then
  return 0
end
local ids = {}
for _, envelope in ipairs(jobs) do
  ids[#ids + 1] = string.sub(envelope, ID_FIRST, ID_LAST)
end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('ZREM', KEYS[1], unpack(jobs))
redis.call('HINCRBY', KEYS[3], ARGV[4], #jobs)
return #jobs
