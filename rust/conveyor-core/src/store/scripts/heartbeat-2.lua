#!lua flags=allow-oom
--[[
  heartbeat: extend the leases a worker still holds, so long jobs are not
  taken for abandoned ones and run twice, and record how far each lease's
  jobs have got.

  KEYS[1]   cv:[<ns>:]{<queue>}:leases     zset: lease token -> deadline (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:progress   hash: lease token -> slot running
  ARGV[1]   lease length in ms, counted from now
  ARGV[2..] pairs: lease token, the slot of its job running now (0: none yet)

  Returns: the tokens that are no longer held (their lease expired and the
  reaper returned their jobs to ready); the worker reports those jobs as
  possibly running twice.

  The slot recorded lets the reaper charge an attempt only to jobs that had
  started. A lost token gets no progress entry (nothing would delete it).

  `allow-oom`: rewriting a score needs no memory, and a worker that cannot
  keep its leases would see every long job run twice. The progress entry is a
  few bytes per lease, deleted with it.
]]
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = now_ms + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local token, slot = ARGV[i], tonumber(ARGV[i + 1])
  if not slot then
    return redis.error_reply('CVARGS heartbeat needs a slot after each token')
  end
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, token) == 0
      and not redis.call('ZSCORE', KEYS[1], token) then
    lost[#lost + 1] = token
  elseif slot > 0 then
    redis.call('HSET', KEYS[2], token, slot)
  end
end
return lost
