#!lua
--[[
  relay_batch: append relayed jobs to a queue, exactly once per Kafka record.

  KEYS[1]   cv:[<ns>:]{<queue>}:ready     list of encoded envelopes
  KEYS[2]   cv:[<ns>:]{<queue>}:relayed   hash: "<topic>:<partition>" -> next offset to relay
  ARGV[1]   "<topic>:<partition>"
  ARGV[2]   the offset after this batch's last record
  ARGV[3..] offset1, envelope1, offset2, envelope2, ... in offset order

  Returns: { pushed, skipped }

  Records below the stored offset are in Redis already (written before a
  crash, or by another relay that owned the partition) and are skipped. That
  makes relaying exactly-once and fences a relay that lost its partition: it
  can only add records nobody has written yet, in offset order.

  The `#!lua` line without `allow-oom` makes Redis refuse the whole script up
  front when it is over maxmemory, so a batch is written entirely or not at
  all; the relay then backs off and retries, and nothing is lost or doubled.
]]
local field = ARGV[1]
local stored = tonumber(redis.call('HGET', KEYS[2], field) or '-1')
local fresh = {}
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i]) >= stored then
    fresh[#fresh + 1] = ARGV[i + 1]
  end
end
-- unpack() is limited by Lua's C stack: push in chunks.
for first = 1, #fresh, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(fresh, first, math.min(first + 999, #fresh)))
end
local next_offset = tonumber(ARGV[2])
if next_offset > stored then
  redis.call('HSET', KEYS[2], field, next_offset)
end
return { #fresh, (#ARGV - 2) / 2 - #fresh }
