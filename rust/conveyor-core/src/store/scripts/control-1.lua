--[[
  control: set or clear one field of a namespace's control hash, which the
  processes concerned re-read about once a second (no restart needed).

  KEYS[1]   one of:
            cv:[<ns>:]relay:control   hash read by relays: "rate:<topic>" -> jobs/s,
                                      "paused:<topic>" -> "1", "shadow:<topic>" -> "1"
            cv:[<ns>:]routes          hash read by producers: job type ->
                                      JSON {"kafka_percent": 0..100, "double_write": bool}
  ARGV[1]   the field
  ARGV[2]   the value; an empty string clears the field

  Returns: 1 if the field is set afterwards, 0 if it is clear.
]]
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
