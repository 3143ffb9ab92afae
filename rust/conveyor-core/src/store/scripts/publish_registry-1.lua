--[[
  publish_registry: record job types (name -> JSON options) in the registry
  that the gate reads to learn which types exist and where they go.

  KEYS[1]     cv:[<ns>:]registry   hash: job type name -> JSON options
  ARGV        name1, json1, name2, json2, ...

  Returns: the number of job types in the registry afterwards.
]]
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('HLEN', KEYS[1])
