#!lua flags=allow-oom
--[[
  fetch: lease up to a batch of jobs to one worker, in one atomic step.

  KEYS[1]   cv:[<ns>:]{<queue>}:ready             list of envelopes, oldest at the head
  KEYS[2]   cv:[<ns>:]{<queue>}:scheduled         zset: envelope -> due time (ms)
  KEYS[3]   cv:[<ns>:]{<queue>}:leases            zset: lease token -> lease deadline (ms)
  KEYS[4]   cv:[<ns>:]{<queue>}:lease:<token>     hash: slot (1..n) -> envelope
  KEYS[5]   cv:[<ns>:]{<queue>}:wake              list of at most one token for idle workers
  KEYS[6]   cv:[<ns>:]{<queue>}:cancelled         zset: job id -> when its cancel was asked (ms)
  ARGV[1]   the lease token: unique per fetch (worker id and a sequence number)
  ARGV[2]   most jobs to take (1 to 1000)
  ARGV[3]   lease length in ms

  Returns: { deadline_ms, { envelope1, envelope2, ... }, { slot, ... } }; the
  list is empty when nothing is ready, and then no lease is created. Slot i
  holds envelope i. The last list names the slots of jobs whose cancel was
  asked (KEYS[6]): the worker settles them as cancelled without running them.
  Looking costs nothing while no cancel is pending (one ZCARD).

  Scheduled jobs that are due are first moved to the head of ready, oldest
  first: they are late already. The cost is O(log S + batch) for S scheduled
  jobs and independent of how many jobs are queued, because ready is a list
  popped at its head. If jobs remain after this fetch, the next idle worker
  is woken, so a burst spreads over all workers without any of them polling.

  `allow-oom`: fetching moves jobs, it does not add any, and it must keep
  working when Redis is at maxmemory (the failure that wedged the system this
  design follows: a full Redis refused even the dequeues that would have
  emptied it).
]]
-- The job id's bytes in an envelope (1-based; envelope::ID_OFFSET).
local ID_FIRST, ID_LAST = 5, 20
local max = tonumber(ARGV[2])
if not max or max < 1 or max > 1000 then
  return redis.error_reply('CVARGS fetch takes 1 to 1000 jobs, not ' .. tostring(ARGV[2]))
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return redis.error_reply('CVARGS lease token already in use: ' .. ARGV[1])
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, max)
if #due > 0 then
  redis.call('ZREM', KEYS[2], unpack(due))
  -- LPUSH puts its last argument at the head: push newest first.
  local reversed = {}
  for i = #due, 1, -1 do
    reversed[#reversed + 1] = due[i]
  end
  redis.call('LPUSH', KEYS[1], unpack(reversed))
end

local jobs = redis.call('LPOP', KEYS[1], max)
if not jobs then
  return { 0, {}, {} }
end
if redis.call('LLEN', KEYS[1]) > 0 then
  redis.call('RPUSH', KEYS[5], 1)
  redis.call('LTRIM', KEYS[5], -1, -1)
end
local fields = {}
for i, envelope in ipairs(jobs) do
  fields[#fields + 1] = i
  fields[#fields + 1] = envelope
end
redis.call('HSET', KEYS[4], unpack(fields))
local deadline = now_ms + tonumber(ARGV[3])
redis.call('ZADD', KEYS[3], deadline, ARGV[1])
local cancelled = {}
if redis.call('ZCARD', KEYS[6]) > 0 then
  for i, envelope in ipairs(jobs) do
    if redis.call('ZSCORE', KEYS[6], string.sub(envelope, ID_FIRST, ID_LAST)) then
      cancelled[#cancelled + 1] = i
    end
  end
end
return { deadline, jobs, cancelled }
