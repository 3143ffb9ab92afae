#!lua flags=allow-oom
--[[
  heartbeat: extend the leases a worker still holds, so long jobs are not
  taken for abandoned ones and run twice.

  KEYS[1]   cv:[<ns>:]{<queue>}:leases   zset: lease token -> deadline (ms)
  ARGV[1]   lease length in ms, counted from now
  ARGV[2..] lease tokens

  Returns: the tokens that are no longer held (their lease expired and the
  reaper returned their jobs to ready); the worker reports those jobs as
  possibly running twice.

  `allow-oom`: rewriting a score needs no memory, and a worker that cannot
  keep its leases would see every long job run twice.
]]
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = now_ms + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i]) == 0
      and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
