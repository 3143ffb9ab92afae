#!lua flags=allow-oom
--[[
  replay_dead: move dead-lettered jobs back to the tail of ready, for an
  operator who fixed the cause. Each goes back as the caller made it: a fresh
  set of attempts (attempt count 0) and a 'replayed' stamp after the stamps
  of the attempts before (store/dead.rs). A unique job takes its dedup key
  again.

  KEYS[1]   cv:[<ns>:]{<queue>}:dead     zset: envelope -> when it died (ms)
  KEYS[2]   cv:[<ns>:]{<queue>}:ready    list of envelopes
  KEYS[3]   cv:[<ns>:]{<queue>}:unique   hash: "<job type> <dedup key>" -> job id
  KEYS[4]   cv:[<ns>:]{<queue>}:wake     list of at most one token for idle workers
  ARGV[1..] per job, four values: its envelope as stored in dead, its
            16-byte id, its unique field ("" if it is not unique), and the
            envelope to put in ready. The caller reads them from dead
            (ZRANGE) and decodes them.

  Returns: { moved, kept }
    moved   back in ready
    kept    left in dead: another job of its type holds its dedup key now
            (replaying it would run a duplicate)
  A job no longer in dead (replayed or purged meanwhile) counts as neither.

  `allow-oom`: moves jobs; a unique job's key is a few bytes.
]]
if #ARGV % 4 ~= 0 then
  return redis.error_reply('CVARGS replay takes envelope, id, unique field, replayed envelope')
end
local fresh = {}
local kept = 0
for i = 1, #ARGV, 4 do
  local envelope, id, field = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('ZSCORE', KEYS[1], envelope) then
    local holder = field ~= '' and redis.call('HGET', KEYS[3], field)
    if holder and holder ~= id then
      kept = kept + 1
    else
      redis.call('ZREM', KEYS[1], envelope)
      if field ~= '' then
        redis.call('HSET', KEYS[3], field, id)
      end
      fresh[#fresh + 1] = ARGV[i + 3]
    end
  end
end
if #fresh > 0 then
  redis.call('RPUSH', KEYS[2], unpack(fresh))
  redis.call('RPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], -1, -1)
end
return { #fresh, kept }
