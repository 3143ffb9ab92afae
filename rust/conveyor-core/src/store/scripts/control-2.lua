--[[
  control: set or clear one field of a namespace's control hash, which the
  processes concerned re-read about once a second (no restart needed), and
  record the change in the hash's history, in the same step.

  KEYS[1]   one of:
            cv:[<ns>:]relay:control   hash read by relays: "rate:<topic>" -> jobs/s,
                                      "paused:<topic>" -> "1", "shadow:<topic>" -> "1"
            cv:[<ns>:]routes          hash read by producers: job type ->
                                      JSON {"kafka_percent": 0..100, "double_write": bool}
  KEYS[2]   {<KEYS[1]>}:history       list of changes, newest first: JSON
                                      {"at": unix s, "who", "from", "field", "old", "new"}
                                      (old/new null when clear); the hash tag puts
                                      it in KEYS[1]'s cluster slot
  ARGV[1]   the field
  ARGV[2]   the value; an empty string clears the field
  ARGV[3]   who made the change (user names, as the caller tells them)
  ARGV[4]   where from (host name, as the caller tells it)
  ARGV[5]   how many changes the history keeps

  Returns: the field's value before ('' if it was clear).
]]
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local now = redis.call('TIME')
local entry = cjson.encode({
  at = tonumber(now[1]) + tonumber(now[2]) / 1e6,
  who = ARGV[3],
  from = ARGV[4],
  field = ARGV[1],
  old = old or cjson.null,
  new = ARGV[2] ~= '' and ARGV[2] or cjson.null,
})
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return old or ''
