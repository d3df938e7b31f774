--[[
apikey_budget_deduct.lua: cost-difference adjustment of one API key's budget (M3.3),
the same pattern as quota_deduct.lua. Idempotent per request id.

KEYS[1]  api key budget hash   bq:{t:<tenant>}:key:<apiKeyId>   { budget_micros (-1 = unlimited), spent_micros }
KEYS[2]  request record hash   bq:{t:<tenant>}:req:<requestId>  (field key_adjusted is the marker)
ARGV[1]  delta_micros   signed integer added to spent_micros
ARGV[2]  ttl_seconds    positive integer: expiry of the request record (refreshed here)

Returns
  {'applied', delta_micros, spent_after_micros, budget_micros}
      spent_micros += delta and key_adjusted = delta were written together;
      budget_micros is -1 for an unlimited key (the caller derives remaining = budget - spent)
  {'duplicate', stored_delta_micros}
      key_adjusted already exists: nothing changes, the delta applied first is returned
  {'key_missing'}
      the key budget hash is not cached: nothing changes and the record is NOT marked
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
  return redis.error_reply('ERR apikey_budget_deduct expects 2 keys, got ' .. #KEYS)
end
if #ARGV ~= 2 then
  return redis.error_reply('ERR apikey_budget_deduct expects 2 arguments, got ' .. #ARGV)
end
local delta, delta_err = parse_int('delta_micros', ARGV[1])
if delta == nil then return redis.error_reply(delta_err) end
local ttl, ttl_err = parse_int('ttl_seconds', ARGV[2])
if ttl == nil then return redis.error_reply(ttl_err) end
if ttl <= 0 then return redis.error_reply('ERR ttl_seconds must be positive') end

local budget_key, record_key = KEYS[1], KEYS[2]

local stored = redis.call('HGET', record_key, 'key_adjusted')
if stored then
  redis.call('EXPIRE', record_key, ttl)
  return {'duplicate', tonumber(stored) or 0}
end

if redis.call('EXISTS', budget_key) == 0 then
  return {'key_missing'}
end
local budget = tonumber(redis.call('HGET', budget_key, 'budget_micros') or '')
if budget == nil then
  return redis.error_reply('ERR corrupt api key budget hash ' .. budget_key)
end

local spent = redis.call('HINCRBY', budget_key, 'spent_micros', ARGV[1])
redis.call('HSET', record_key, 'key_adjusted', ARGV[1])
redis.call('EXPIRE', record_key, ttl)

return {'applied', delta, spent, budget}
