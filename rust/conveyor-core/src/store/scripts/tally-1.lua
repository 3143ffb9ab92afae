#!lua flags=allow-oom
--[[
  tally: add jobs a producer had acknowledged by Kafka to one minute's counts
  (tally.rs).

  KEYS[1]   cv:[<ns>:]{<queue>}:tally:<minute>  hash: hop -> jobs enqueued in that minute
  ARGV[1]   the hop ('sent')
  ARGV[2]   how many jobs

  Returns: the hop's count after adding.

  `allow-oom`: a few bytes per minute, and a count missing while Redis is
  full would later read as jobs lost.
]]
local TALLY_TTL_S = 172800
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], TALLY_TTL_S)
return n
