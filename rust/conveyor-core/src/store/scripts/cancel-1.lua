#!lua flags=allow-oom
--[[
  cancel: ask for a job to be cancelled, by its id, in one queue.

  KEYS[1]   cv:[<ns>:]{<queue>}:cancelled   zset: job id -> when its cancel was asked (ms)
  ARGV[1]   the 16-byte job id
  ARGV[2]   how long a cancel waits for its job (ms): older ones are forgotten
  ARGV[3]   most cancels kept waiting (the oldest go first)

  Returns: 1 if the cancel is new, 0 if it was asked before.

  The mark is all: a worker that leases the job settles it as cancelled
  without running it (fetch-6.lua names it), a worker running it sees it at
  its next heartbeat, and settling the job removes the mark (settle-11.lua).
  A mark whose job never comes (it ended first, or is in another queue) is
  forgotten after ARGV[2] ms or when ARGV[3] newer ones wait, so marks
  cannot grow Redis without bound.

  `allow-oom`: a mark is a few bytes, bounded by ARGV[3]; a cancel must work
  on a full Redis, when stopping jobs may be what is needed.
]]
local keep_ms, most = tonumber(ARGV[2]), tonumber(ARGV[3])
if #ARGV[1] ~= 16 or not keep_ms or keep_ms < 1 or not most or most < 1 then
  return redis.error_reply('CVARGS cancel takes a 16-byte id, a keep time in ms and a count')
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local new = redis.call('ZADD', KEYS[1], 'NX', now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - keep_ms))
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(most + 1))
return new
