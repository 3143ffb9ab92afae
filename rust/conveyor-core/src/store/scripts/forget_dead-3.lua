#!lua flags=allow-oom
--[[
  forget_dead: delete chosen dead-lettered jobs with their error records (an
  operator's selection, from the dashboard); `purge_dead` forgets by age.

  KEYS[1]   cv:[<ns>:]{<queue>}:dead     zset: envelope -> when it died (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:errors   hash: job id -> last error (JSON)
  KEYS[3]   cv:[<ns>:]{<queue>}:counts   hash: counter name -> count
  ARGV[1..] the envelopes to forget, as stored in dead (the caller reads
            them with ZRANGE and picks them by id)

  Returns: how many were forgotten (counted as `dead_purged`); a job no
  longer in dead (replayed or purged meanwhile) is not counted.

  `allow-oom`: frees memory, adds none.
]]
-- The job id inside an envelope (1-based; envelope::ID_OFFSET, ID_LEN).
local ID_FIRST, ID_LAST = 5, 20
local forgotten = 0
for _, envelope in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], envelope) == 1 then
    redis.call('HDEL', KEYS[2], string.sub(envelope, ID_FIRST, ID_LAST))
    forgotten = forgotten + 1
  end
end
if forgotten > 0 then
  redis.call('HINCRBY', KEYS[3], 'dead_purged', forgotten)
end
return forgotten
