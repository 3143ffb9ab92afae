--[[
  relay_control: set or clear one relay control for a topic, which every
  relay of the namespace reads about twice a second.

  KEYS[1]   cv:[<ns>:]relay:control   hash: "rate:<topic>" -> jobs/s, "paused:<topic>" -> "1",
                                      "shadow:<topic>" -> "1"
  ARGV[1]   the field ("rate:<topic>", "paused:<topic>" or "shadow:<topic>")
  ARGV[2]   the value; an empty string clears the field

  Returns: 1 if the field is set afterwards, 0 if it is clear.
]]
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
