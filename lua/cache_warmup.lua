--[[
cache_warmup.lua: cache warm-up with SETNX semantics for a whole hash (M2.2). A
counter missing from Redis is rebuilt from PostgreSQL; the hash is created only if
it does not exist, so two concurrent warm-ups cannot overwrite each other, and a
late warm-up carrying a stale database snapshot can never overwrite a live counter
that admissions have already moved.

KEYS[1]  the hash to create (e.g. bq:{t:<tenant>}:quota or bq:{t:<tenant>}:key:<apiKeyId>)
ARGV     field1, value1, field2, value2, ... (at least one pair)

Returns 1 when the hash was created, 0 when it already existed (nothing changes).
An odd or empty ARGV -> error reply, nothing changes.
The counters are live state, not a cache entry that may lapse: no expiry is set.
]]

if #KEYS ~= 1 then
  return redis.error_reply('ERR cache_warmup expects 1 key, got ' .. #KEYS)
end
if #ARGV == 0 or #ARGV % 2 ~= 0 then
  return redis.error_reply('ERR cache_warmup expects field/value pairs, got ' .. #ARGV .. ' arguments')
end
for i = 1, #ARGV, 2 do
  if ARGV[i] == '' then
    return redis.error_reply('ERR cache_warmup field names must not be empty')
  end
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
