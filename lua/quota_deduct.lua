--[[
quota_deduct.lua: cost-difference adjustment of the tenant quota (M3.2). After
settlement the caller applies (real cost - reservation): a negative delta refunds,
a positive delta charges the overage. Idempotent per request id: the delta is
applied at most once, whatever retries or activity replays happen.

KEYS[1]  tenant quota hash     bq:{t:<tenant>}:quota           { limit_micros, used_micros }
KEYS[2]  request record hash   bq:{t:<tenant>}:req:<requestId>  (field tenant_adjusted is the marker)
ARGV[1]  delta_micros   signed integer added to used_micros
ARGV[2]  ttl_seconds    positive integer: expiry of the request record (refreshed here)

Returns
  {'applied', delta_micros, used_after_micros, remaining_after_micros}
      used_micros += delta and tenant_adjusted = delta were written together;
      remaining = limit - used, negative after a settled overage
  {'duplicate', stored_delta_micros}
      tenant_adjusted already exists: nothing changes, the delta applied first is returned
  {'tenant_missing'}
      the quota hash is not cached: nothing changes and the record is NOT marked, so the
      caller can warm the hash up (the database already holds the adjustment) and retry
A record that does not exist (e.g. admission went through the PostgreSQL fallback) is
created with the marker, so a later retry is still a duplicate.
Malformed ARGV or a corrupt counter -> error reply, nothing changes.
]]

local MAX_SAFE = 9007199254740991

-- A canonical decimal integer within 2^53: safe for Lua arithmetic and for HINCRBY.
local function parse_int(name, value)
  if type(value) ~= 'string' or not (value == '0' or string.match(value, '^%-?[1-9]%d*$')) then
    return nil, 'ERR ' .. name .. ' must be a canonical integer, got ' .. tostring(value)
  end
  local n = tonumber(value)
  if n == nil or n > MAX_SAFE or n < -MAX_SAFE then
    return nil, 'ERR ' .. name .. ' is outside the safe integer range'
  end
  return n
end

if #KEYS ~= 2 then
  return redis.error_reply('ERR quota_deduct expects 2 keys, got ' .. #KEYS)
end
if #ARGV ~= 2 then
  return redis.error_reply('ERR quota_deduct expects 2 arguments, got ' .. #ARGV)
end
local delta, delta_err = parse_int('delta_micros', ARGV[1])
if delta == nil then return redis.error_reply(delta_err) end
local ttl, ttl_err = parse_int('ttl_seconds', ARGV[2])
if ttl == nil then return redis.error_reply(ttl_err) end
if ttl <= 0 then return redis.error_reply('ERR ttl_seconds must be positive') end

local quota_key, record_key = KEYS[1], KEYS[2]

local stored = redis.call('HGET', record_key, 'tenant_adjusted')
if stored then
  redis.call('EXPIRE', record_key, ttl)
  return {'duplicate', tonumber(stored) or 0}
end

if redis.call('EXISTS', quota_key) == 0 then
  return {'tenant_missing'}
end
local limit = tonumber(redis.call('HGET', quota_key, 'limit_micros') or '')
if limit == nil then
  return redis.error_reply('ERR corrupt tenant quota hash ' .. quota_key)
end

local used = redis.call('HINCRBY', quota_key, 'used_micros', ARGV[1])
redis.call('HSET', record_key, 'tenant_adjusted', ARGV[1])
redis.call('EXPIRE', record_key, ttl)

return {'applied', delta, used, limit - used}
