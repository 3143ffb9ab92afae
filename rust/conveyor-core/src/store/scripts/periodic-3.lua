#!lua
--[[
  periodic: enqueue one occurrence of a periodic job, once, however many
  workers try. Every worker's scheduler calls this for each occurrence it
  sees come due; the first call claims it, the rest change nothing.

  KEYS[1]   cv:[<ns>:]{<queue>}:periodic   hash: schedule name -> last occurrence enqueued (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:ready      list of envelopes
  KEYS[3]   cv:[<ns>:]{<queue>}:wake       list of at most one token for idle workers
  ARGV[1]   the schedule's name
  ARGV[2]   the occurrence: its due time in ms since the epoch
  ARGV[3]   the job's envelope

  Returns: 1 if this call enqueued the occurrence, 0 if it was enqueued
  before (or a later one was).

  Claiming and enqueueing are one step, so a worker dying between the two
  cannot lose an occurrence. Refused when Redis is full like every admission
  (no `allow-oom`); the scheduler tries again on its next tick.
]]
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local occurrence = tonumber(ARGV[2])
if occurrence <= last then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], occurrence)
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('RPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], -1, -1)
return 1
