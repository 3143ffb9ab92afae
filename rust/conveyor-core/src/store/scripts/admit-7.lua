#!lua
--[[
  admit: put new jobs into their queue, exactly once per Kafka record. Used by
  the relay (fenced by Kafka offset) and by the direct-to-Redis path (no fence).

  KEYS[1]   cv:[<ns>:]{<queue>}:ready       list of envelopes, oldest at the head
  KEYS[2]   cv:[<ns>:]{<queue>}:relayed     hash: "<topic>:<partition>" -> next offset to relay
  KEYS[3]   cv:[<ns>:]{<queue>}:scheduled   zset: envelope -> due time (ms)
  KEYS[4]   cv:[<ns>:]{<queue>}:unique      hash: "<job type> <dedup key>" -> id of the job holding it
  KEYS[5]   cv:[<ns>:]{<queue>}:counts      hash: counter name -> count
  KEYS[6]   cv:[<ns>:]{<queue>}:wake        list of at most one token: BLPOPed by idle workers
  KEYS[7]   cv:[<ns>:]{<queue>}:open        hash: "<partition>:<block>" -> jobs of that block not finished
  KEYS[8..] cv:[<ns>:]{<queue>}:tally:<minute>  hash: hop -> jobs enqueued in that minute,
            one key for each minute the batch's job ids fall in (tally.rs)
  ARGV[1]   fence: "<topic>:<partition>", or "" for the direct path (no fence)
  ARGV[2]   with a fence: the offset after this batch's last record
  ARGV[3]   with a fence: the least stored offset the relay expects (-1: none
            expected, a partition it starts without a fence)
  ARGV[4]   with a fence: "<partition>:", the start of its fields in KEYS[7]
  ARGV[5..] per job, four values: offset (ignored without a fence),
            run_at in ms (0: now), unique field ("<job type> <dedup key>", "" for none), envelope

  Returns: { queued, scheduled, duplicates, skipped, behind, stored }
    behind      1 when Redis holds less of the partition than the relay
                expected (ARGV[3]): Redis went back in time (restored,
                failed over to a lagging replica) or lost the partition
                (wiped). Nothing is written; `stored` is the stored offset
                (-1: none), from which the relay reads the partition again.
    queued      appended to ready (state queued)
    scheduled   added to scheduled, run_at still in the future (state scheduled)
    duplicates  dropped: another job of its type holding its dedup key is queued,
                scheduled or running (unique jobs)
    skipped     below the fence: Redis has this record already

  Each job not skipped (duplicates included: dropped by design, not lost) is
  counted in the tally of its id's minute, as 'relayed' with a fence and
  'direct' without; a minute with no key given is counted as 'untallied' in
  KEYS[5]. With no tally key at all, tallies are off and nothing is counted.

  When jobs were queued, one idle worker is woken (a token on `wake`, which
  never holds more than one); idle workers block on it instead of polling.

  Relayed jobs are counted into their block of KEYS[7] (1,024 offsets per
  block, keys::OPEN_BLOCK) and counted out by settle-9.lua when they finish;
  the lowest open block is the partition's watermark, which the relay
  commits to Kafka (docs/recovery.md).

  Records below the stored offset were written before (a crash, or another
  relay that owned the partition) and are skipped. That makes relaying
  exactly-once and fences a relay that lost its partition: it can only add
  records nobody has written yet, in offset order.

  The relay writes plain batches (no dedup key, no run-at, at or past the
  fence) without this script, with the same keys and effect, in one
  WATCH/MULTI/EXEC: see `RedisStore::relay_batches` and docs/redis.md.

  The `#!lua` line without `allow-oom` makes Redis refuse the whole script up
  front when it is over maxmemory: admitting jobs is exactly what must stop
  when Redis is full. The batch is written entirely or not at all; the caller
  backs off and retries, so nothing is lost or doubled, and the backlog stays
  in Kafka.
]]
-- The envelope's job id, bytes ID_FIRST..ID_LAST (1-based; envelope::ID_OFFSET, ID_LEN).
local ID_FIRST, ID_LAST = 5, 20
-- Offsets per block of the open-jobs hash (keys::OPEN_BLOCK).
local OPEN_BLOCK = 1024
local TALLY_TTL_S = 172800
local FIRST = 5
local fence = ARGV[1]
local stored = -1
if fence ~= '' then
  stored = tonumber(redis.call('HGET', KEYS[2], fence) or '-1')
  if stored < tonumber(ARGV[3]) then
    return { 0, 0, 0, 0, 1, stored }
  end
end
local open_prefix = fence ~= '' and ARGV[4] or ''
local opened = {}
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local tally_keys, tallied = {}, {}
local tallying = #KEYS > 7
for k = 8, #KEYS do
  tally_keys[tonumber(string.match(KEYS[k], ':(%d+)$'))] = k
end
-- The minute of a job id's time: its first 6 bytes are milliseconds since
-- the epoch, big-endian (id.rs); a double holds them exactly.
local function minute_of(envelope)
  local a, b, c, d, e, f = string.byte(envelope, ID_FIRST, ID_FIRST + 5)
  return math.floor((((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f) / 60000)
end

local ready, later = {}, {}
local nready = 0
local duplicates, skipped = 0, 0
-- Offsets ascend within a batch: when its first record is at or past the
-- fence (every batch but the first after a crash or rebalance), no record
-- needs its offset checked. Per-job work here is what bounds relaying.
local fenced = fence ~= '' and #ARGV >= FIRST and tonumber(ARGV[FIRST]) < stored
for i = FIRST, #ARGV, 4 do
  local envelope = ARGV[i + 3]
  if fenced and tonumber(ARGV[i]) < stored then
    skipped = skipped + 1
  else
    if tallying then
      local minute = minute_of(envelope)
      tallied[minute] = (tallied[minute] or 0) + 1
    end
    local fresh = true
    local key = ARGV[i + 2]
    if key ~= '' then
      -- Bytes 5..20 of an envelope are its 16-byte id (docs/envelope.md).
      fresh = redis.call('HSETNX', KEYS[4], key, string.sub(envelope, ID_FIRST, ID_LAST)) == 1
    end
    if not fresh then
      duplicates = duplicates + 1
    else
      if open_prefix ~= '' then
        local field = open_prefix .. math.floor(tonumber(ARGV[i]) / OPEN_BLOCK)
        opened[field] = (opened[field] or 0) + 1
      end
      local run_at = ARGV[i + 1]
      if run_at ~= '0' and tonumber(run_at) > now_ms then
        later[#later + 1] = tonumber(run_at)
        later[#later + 1] = envelope
      else
        nready = nready + 1
        ready[nready] = envelope
      end
    end
  end
end
-- unpack() is limited by Lua's C stack: write in chunks.
for first = 1, #ready, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ready, first, math.min(first + 999, #ready)))
end
for first = 1, #later, 1000 do
  redis.call('ZADD', KEYS[3], unpack(later, first, math.min(first + 999, #later)))
end
if #ready > 0 then
  redis.call('RPUSH', KEYS[6], 1)
  redis.call('LTRIM', KEYS[6], -1, -1)
end
if fence ~= '' then
  local next_offset = tonumber(ARGV[2])
  if next_offset > stored then
    redis.call('HSET', KEYS[2], fence, next_offset)
  end
end
if #ready + #later > 0 then
  redis.call('HINCRBY', KEYS[5], 'admitted', #ready + #later / 2)
end
for field, n in pairs(opened) do
  redis.call('HINCRBY', KEYS[7], field, n)
end
if duplicates > 0 then
  redis.call('HINCRBY', KEYS[5], 'duplicates', duplicates)
end
local hop = fence ~= '' and 'relayed' or 'direct'
for minute, n in pairs(tallied) do
  local k = tally_keys[minute]
  if k then
    redis.call('HINCRBY', KEYS[k], hop, n)
    redis.call('EXPIRE', KEYS[k], TALLY_TTL_S)
  else
    redis.call('HINCRBY', KEYS[5], 'untallied', n)
  end
end
return { #ready, #later / 2, duplicates, skipped, 0, stored }
