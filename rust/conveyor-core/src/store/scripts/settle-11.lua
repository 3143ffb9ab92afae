#!lua flags=allow-oom
--[[
  settle: record how the jobs of one lease ended: done, retry later, dead, or
  cancelled.

  KEYS[1]   cv:[<ns>:]{<queue>}:lease:<token>   hash: slot -> envelope
  KEYS[2]   cv:[<ns>:]{<queue>}:leases          zset: lease token -> deadline (ms)
  KEYS[3]   cv:[<ns>:]{<queue>}:scheduled       zset: envelope -> due time (ms)
  KEYS[4]   cv:[<ns>:]{<queue>}:dead            zset: envelope -> when it died (ms)
  KEYS[5]   cv:[<ns>:]{<queue>}:errors          hash: job id -> last error (JSON)
  KEYS[6]   cv:[<ns>:]{<queue>}:unique          hash: "<job type> <dedup key>" -> job id
  KEYS[7]   cv:[<ns>:]{<queue>}:counts          hash: counter name -> count
  KEYS[8]   cv:[<ns>:]{<queue>}:progress        hash: lease token -> slot running
  KEYS[9]   cv:[<ns>:]{<queue>}:open            hash: "<partition>:<block>" -> open jobs
  KEYS[10]  cv:[<ns>:]{<queue>}:history:<bucket> string: how jobs ended, one
            record after another (history.rs): its kind ('D' done, 'R' to
            retry, 'X' dead, 'C' cancelled), Redis' time in ms (13 digits),
            the envelope's length (8 hex digits), the envelope (the leased
            one for a done or cancelled job)
  KEYS[11]  cv:[<ns>:]{<queue>}:cancelled       zset: job id -> when its cancel was asked (ms)
  KEYS[12..] cv:[<ns>:]{<queue>}:result:<job id>  string: a job's result, one
            key for each 'V' record, in order; and
            cv:[<ns>:]{<queue>}:tally:<minute>  hash: hop -> jobs enqueued in
            that minute, one key for each 'M' record (tally.rs)
  ARGV[1]   the lease token
  ARGV[2]   seconds KEYS[10] lives after its last write; 0 records no history
  ARGV[3]   most bytes KEYS[10] takes (past it, jobs are not recorded)
  ARGV[4..] records, each starting with its kind:
              'D', slot, id, unique field                               done
              'O', slot, id, unique field, open field                   done, relayed
              'R', slot, id, unique field, envelope, delay ms, error    retry after delay
              'X', slot, id, unique field, open field, envelope, error  dead letter
              'C', slot, id, unique field, open field                   cancelled
              'V', key index, ttl ms, result      keep the result of the job
                                                  of the record before it
              'M', key index          the jobs of the records after it were
                                      enqueued in the minute of KEYS[key index]
            id is the 16-byte job id, or "" for a done job that never failed
            and is not unique (nothing to clean up). The unique field is the
            job's field in KEYS[6], or "". envelope is the job
            as it should be stored: attempt counted, stage stamps appended.
            error is the error record (JSON), or "" to keep none (the
            worker sends none for a retry while Redis is nearly full).
            open field is the job's field in KEYS[9] (keys::open_field),
            or "" for a job that did not come from a relay: a job that ends
            is counted out of its block there, so the relay's watermark
            (docs/recovery.md) moves past it. 'D' is 'O' without one (an
            argument fewer per job of the direct path). A 'V' record follows
            the 'D', 'O', 'X' or 'C' record of a job whose type keeps results
            (KEYS[key index]); it is not kept when that record was stale.

  A cancelled job leaves like a done one (its mark in KEYS[11] goes too).
  Each done, cancelled or dead job that was applied (not stale) is counted
  as 'ended' in the tally of the last 'M' record before it.

  Returns: { done, retried, dead, stale, cancelled }
    stale   records whose slot is no longer leased: the lease expired and the
            reaper put the job back in ready (it will run again), or the slot
            was settled before. Nothing is changed for them.

  When the last slot of a lease is settled, the lease is deleted. (After a
  settle that dead-letters, the worker runs `purge_dead` for the retention.)

  A retry's due time is Redis' clock plus its delay, never the worker's
  clock: a worker whose clock is off neither retries at once nor parks a job.

  `allow-oom`: settling frees the lease; a retry or dead letter moves the same
  bytes (plus a few stage stamps and the error) elsewhere. A full Redis must
  never stop jobs from finishing. A kept result adds a key: while Redis is
  nearly full the worker keeps none (worker/records.rs).
]]
local TALLY_TTL_S = 172800
local done, retried, dead, stale, cancelled = 0, 0, 0, 0, 0
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local ttl = tonumber(ARGV[2])
local record = ttl > 0 and redis.call('STRLEN', KEYS[10]) < tonumber(ARGV[3])
local history = {}
-- The lease's slots, read at once: a record whose slot is not among them is
-- stale, and the slots settled go in one write at the end, not a call per
-- job (bench/script_cost.py). A done job is recorded with its leased
-- envelope, so with a history the envelopes are read too.
local in_lease, leased_envelopes = {}, {}
if record then
  local all = redis.call('HGETALL', KEYS[1])
  for j = 1, #all, 2 do
    in_lease[all[j]] = true
    leased_envelopes[all[j]] = all[j + 1]
  end
else
  for _, slot in ipairs(redis.call('HKEYS', KEYS[1])) do
    in_lease[slot] = true
  end
end
local settled = {}

local closed = {}
-- One append per settle, not a write per job: the history costs a copy.
local function remember(kind, envelope)
  history[#history + 1] = kind .. string.format('%013d%08x', now_ms, #envelope) .. envelope
end

local function close(field)
  if field ~= '' then
    closed[field] = (closed[field] or 0) + 1
  end
end

local function release_unique(id, key)
  if key ~= '' and redis.call('HGET', KEYS[6], key) == id then
    redis.call('HDEL', KEYS[6], key)
  end
end

-- Check every record before changing anything: a script that stops half way
-- leaves its earlier writes in place.
local WIDTH = { D = 4, O = 5, R = 7, X = 7, C = 5, V = 4, M = 2 }
local FIRST = 4
local i = FIRST
while i <= #ARGV do
  local width = WIDTH[ARGV[i]]
  if not width then
    return redis.error_reply('CVARGS unknown settle record kind ' .. tostring(ARGV[i]))
  end
  if ARGV[i] == 'R' then
    local delay = tonumber(ARGV[i + 5])
    if not delay or delay < 0 then
      return redis.error_reply('CVARGS a retry delay is a number of ms, not ' .. tostring(ARGV[i + 5]))
    end
  elseif ARGV[i] == 'V' then
    local key, ttl_ms = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if not key or not KEYS[key] or key <= 11 or not ttl_ms or ttl_ms < 1 then
      return redis.error_reply('CVARGS a result names a key past KEYS[11] and a ttl in ms')
    end
  elseif ARGV[i] == 'M' then
    local key = tonumber(ARGV[i + 1])
    if not key or not KEYS[key] or key <= 11 then
      return redis.error_reply('CVARGS a minute names a key past KEYS[11]')
    end
  end
  i = i + width
end

i = FIRST
-- Whether the record before a 'V' was applied (not stale).
local applied = false
-- Jobs ended, by tally key index; the key of the last 'M' record.
local ended, minute_key = {}, nil
while i <= #ARGV do
  local kind, slot, id, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local width = WIDTH[kind]
  local leased = leased_envelopes[slot]
  -- A slot settles once: a second record of it in one call is stale too.
  local fresh = kind ~= 'M' and kind ~= 'V' and in_lease[slot]
  if fresh then
    in_lease[slot] = nil
    settled[#settled + 1] = slot
  end
  if kind == 'M' then
    minute_key = tonumber(slot)
  elseif kind == 'V' then
    if applied then
      redis.call('SET', KEYS[tonumber(slot)], ARGV[i + 3], 'PX', tonumber(id))
    end
  elseif not fresh then
    applied = false
    stale = stale + 1
  elseif kind == 'D' or kind == 'O' then
    applied = true
    done = done + 1
    if leased then
      remember('D', leased)
    end
    if kind == 'O' then
      close(ARGV[i + 4])
    end
    if id ~= '' then
      redis.call('HDEL', KEYS[5], id)
      release_unique(id, key)
    end
  elseif kind == 'C' then
    applied = true
    cancelled = cancelled + 1
    if leased then
      remember('C', leased)
    end
    close(ARGV[i + 4])
    redis.call('ZREM', KEYS[11], id)
    redis.call('HDEL', KEYS[5], id)
    release_unique(id, key)
  elseif kind == 'R' then
    applied = false
    retried = retried + 1
    redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[i + 5]), ARGV[i + 4])
    if record then
      remember('R', ARGV[i + 4])
    end
    if ARGV[i + 6] ~= '' then
      redis.call('HSET', KEYS[5], id, ARGV[i + 6])
    end
  else
    applied = true
    dead = dead + 1
    close(ARGV[i + 4])
    redis.call('ZADD', KEYS[4], now_ms, ARGV[i + 5])
    if record then
      remember('X', ARGV[i + 5])
    end
    if ARGV[i + 6] ~= '' then
      redis.call('HSET', KEYS[5], id, ARGV[i + 6])
    end
    release_unique(id, key)
  end
  if applied and minute_key and kind ~= 'V' and kind ~= 'M' then
    ended[minute_key] = (ended[minute_key] or 0) + 1
  end
  i = i + width
end

for k, n in pairs(ended) do
  redis.call('HINCRBY', KEYS[k], 'ended', n)
  redis.call('EXPIRE', KEYS[k], TALLY_TTL_S)
end

if #history > 0 then
  redis.call('APPEND', KEYS[10], table.concat(history))
  redis.call('EXPIRE', KEYS[10], ttl)
end

if next(in_lease) == nil then
  -- Every slot settled (or the lease was reaped): the lease ends.
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[8], ARGV[1])
else
  -- unpack's stack is bounded: a thousand fields a call.
  for j = 1, #settled, 1000 do
    redis.call('HDEL', KEYS[1], unpack(settled, j, math.min(j + 999, #settled)))
  end
end
for field, n in pairs(closed) do
  if redis.call('HINCRBY', KEYS[9], field, -n) <= 0 then
    redis.call('HDEL', KEYS[9], field)
  end
end
for name, n in pairs({ done = done, retried = retried, dead = dead, cancelled = cancelled }) do
  if n > 0 then
    redis.call('HINCRBY', KEYS[7], name, n)
  end
end
return { done, retried, dead, stale, cancelled }
