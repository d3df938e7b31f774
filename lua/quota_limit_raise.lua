--[[
quota_limit_raise.lua: carries a top-up's new quota limit into the cached tenant quota.
PostgreSQL is the source of truth for the limit; this only moves the cached copy up.
The limit is set to max(current, new), never lowered, so concurrent top-ups whose
Redis calls arrive out of order still end at the highest (latest) limit: the exact sum.
A hash that is not cached is left alone: the next warm-up reads the new limit from
PostgreSQL, and creating the hash here without used_micros would admit against 0 used.

KEYS[1]  tenant quota hash   bq:{t:<tenant>}:quota   { limit_micros, used_micros, version }
ARGV[1]  limit_micros        non-negative canonical integer: the tenant's limit in PostgreSQL

Returns
  {'raised', limit_micros}      limit_micros was lower and is now ARGV[1]; version += 1 (the
                                consistency check's compare-and-set token)
  {'kept', limit_micros}        limit_micros was already >= ARGV[1]: nothing changes
  {'tenant_missing'}            the quota hash is not cached: nothing changes
Malformed ARGV or a corrupt cached limit -> error reply, nothing changes.
]]

-- requires: lib/integers.lua

local arity = arity_error('quota_limit_raise', 1, 1)
if arity then return redis.error_reply(arity) end
local new_limit, limit_err = parse_non_negative('limit_micros', ARGV[1])
if new_limit == nil then return redis.error_reply(limit_err) end

local quota_key = KEYS[1]
if redis.call('EXISTS', quota_key) == 0 then
  return {'tenant_missing'}
end

local raw = redis.call('HGET', quota_key, 'limit_micros')
local current = nil
if raw then current = parse_int('cached limit_micros', raw) end
if current == nil then
  return redis.error_reply('ERR corrupt tenant quota hash ' .. quota_key)
end

if current >= new_limit then
  return {'kept', current}
end
redis.call('HSET', quota_key, 'limit_micros', ARGV[1])
redis.call('HINCRBY', quota_key, 'version', 1)
return {'raised', new_limit}
