--[[
  push_ready: append encoded envelopes to the tail of a queue's ready list.

  KEYS[1]     cv:{<queue>}:ready   list of encoded envelopes, oldest at the head
  ARGV[1..n]  encoded envelopes (bytes, never re-encoded)

  Returns: the length of the ready list after the push.

  No `allow-oom` flag on purpose: adding jobs is exactly what must be refused
  when Redis is full, so the caller (relay or direct path) backs off and the
  backlog stays in Kafka.
]]
return redis.call('RPUSH', KEYS[1], unpack(ARGV))
