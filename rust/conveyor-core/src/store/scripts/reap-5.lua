#!lua flags=allow-oom
--[[
  reap: return the jobs of expired leases (their worker died or hung) to the
  head of ready, with one more attempt counted for each job that had started.

  KEYS[1]   cv:[<ns>:]{<queue>}:leases   zset: lease token -> deadline (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:ready    list of envelopes
  KEYS[3]   cv:[<ns>:]{<queue>}:counts   hash: counter name -> count
  KEYS[4]   cv:[<ns>:]{<queue>}:wake     list of at most one token for idle workers
  KEYS[5]   cv:[<ns>:]{<queue>}:progress hash: lease token -> slot running (heartbeat)
  KEYS[6..] cv:[<ns>:]{<queue>}:lease:<token> for each token in ARGV
  ARGV[1..] lease tokens the caller found expired (ZRANGEBYSCORE leases);
            each is checked again here, atomically

  Returns: { leases reaped, jobs returned }

  An expired lease counts as an attempt for each of its jobs that had started
  (the job may have been what killed the worker): the slots up to the one its
  worker last reported running, and always the first (a job that kills its
  worker at once, before any heartbeat, must still use up its attempts; it
  reaches the first slot of some batch, since reaped jobs go to the head).
  Jobs after that never started and go back uncharged. The worker
  dead-letters a job that comes back with no attempts left instead of running
  it again. The attempt is a u32 at
  bytes 29..32 of the envelope (docs/envelope.md). An entry too short to hold
  one goes back unchanged (the worker dead-letters it), never stopping a reap.

  `allow-oom`: moves jobs, adds none.
]]
-- The envelope's attempt count, a big-endian u32 from ATTEMPT_FIRST (1-based;
-- envelope::ATTEMPT_OFFSET).
local ATTEMPT_FIRST = 29
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local leases, jobs = 0, 0
for i, token in ipairs(ARGV) do
  local deadline = redis.call('ZSCORE', KEYS[1], token)
  if deadline and tonumber(deadline) < now_ms then
    local started = math.max(1, tonumber(redis.call('HGET', KEYS[5], token)) or 0)
    local flat = redis.call('HGETALL', KEYS[5 + i])
    local by_slot = {}
    for j = 1, #flat, 2 do
      by_slot[#by_slot + 1] = { tonumber(flat[j]), flat[j + 1] }
    end
    table.sort(by_slot, function(a, b) return a[1] > b[1] end)
    local back = {}
    for _, entry in ipairs(by_slot) do
      local envelope = entry[2]
      if entry[1] > started then
        back[#back + 1] = envelope
      elseif #envelope >= ATTEMPT_FIRST + 3 then
        local attempt = struct.unpack('>I4', envelope, ATTEMPT_FIRST)
        back[#back + 1] = string.sub(envelope, 1, ATTEMPT_FIRST - 1)
          .. struct.pack('>I4', attempt + 1) .. string.sub(envelope, ATTEMPT_FIRST + 4)
      else
        -- Too short to be an envelope: back as it is, so that the next fetch
        -- dead-letters it with the reason, and the reap goes on.
        back[#back + 1] = envelope
      end
    end
    if #back > 0 then
      redis.call('LPUSH', KEYS[2], unpack(back))
    end
    redis.call('DEL', KEYS[5 + i])
    redis.call('ZREM', KEYS[1], token)
    redis.call('HDEL', KEYS[5], token)
    leases = leases + 1
    jobs = jobs + #back
  end
end
if jobs > 0 then
  redis.call('HINCRBY', KEYS[3], 'reaped', jobs)
  redis.call('RPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], -1, -1)
end
return { leases, jobs }
