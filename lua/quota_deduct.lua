--[[
quota_deduct.lua: settles one request on the tenant quota, "settle to cost" (M3.2).
The caller passes the request's final cost (0 for a void); the script applies
  delta = cost - (the reservation this counter holds for the request)
so a reservation the counter holds is refunded or topped up to the cost, and a
request the counter never counted is charged its full cost. Whether the counter
holds the reservation is read from the request record, not from the admission path:

  record tenant_warmup_id == hash warmup_id  the warm-up that built this hash marked the
                                             record: it holds tenant_counted_micros (the
                                             pending reservation, or the settled cost)
  record tenant_warmup_id, another value     the hash was rebuilt from a ledger snapshot in
                                             which this request was already settled: it
                                             holds the final cost, delta = 0
  no tenant_warmup_id, after_warmup = 1      the caller saw the hash missing AFTER the ledger
                                             settled this request, and warmed it; a warm-up
                                             whose snapshot had the reservation pending would
                                             have marked the record, so the hash holds the
                                             final cost: delta = 0
  no tenant_warmup_id, api_key_id present    quota_check.lua (the only writer of api_key_id)
                                             reserved reserved_micros on this counter
  nothing                                    not counted (PostgreSQL fallback admission while
                                             the counter was live): delta = cost
One race remains, outside this script: a record that outlives its counter (the hash
alone lost and rebuilt while quota_check.lua's record stays) describes the old hash;
src/activities/billing-step.ts documents it.
Idempotent per request id: the delta is applied at most once (marker tenant_adjusted),
whatever retries or activity replays happen.

KEYS[1]  tenant quota hash     bq:{t:<tenant>}:quota           { limit_micros, used_micros, warmup_id }
KEYS[2]  request record hash   bq:{t:<tenant>}:req:<requestId>  { reserved_micros, api_key_id, tenant_counted_micros, tenant_warmup_id, tenant_adjusted, ... }
ARGV[1]  cost_micros    non-negative integer: the request's final cost, 0 for a void
ARGV[2]  ttl_seconds    positive integer: expiry of the request record (refreshed here)
ARGV[3]  after_warmup   '0', or '1' when the caller warmed the hash after the ledger settled
                        this request (the hash was missing at settlement)

Returns
  {'applied', delta_micros, used_after_micros, remaining_after_micros}
      used_micros += delta and tenant_adjusted = delta were written together;
      remaining = limit - used, negative after a settled overage
  {'duplicate', stored_delta_micros}
      tenant_adjusted already exists: nothing changes, the delta applied first is returned
  {'tenant_missing'}
      the quota hash is not cached: nothing changes and the record is NOT marked, so the
      caller can warm the hash up (the database already holds the settlement) and retry
      with after_warmup = 1
A record that does not exist (e.g. admission went through the PostgreSQL fallback) is
created with the marker, so a later retry is still a duplicate.
Malformed ARGV or a corrupt counter or record -> error reply, nothing changes.
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
if #ARGV ~= 3 then
  return redis.error_reply('ERR quota_deduct expects 3 arguments, got ' .. #ARGV)
end
local cost, cost_err = parse_int('cost_micros', ARGV[1])
if cost == nil then return redis.error_reply(cost_err) end
if cost < 0 then return redis.error_reply('ERR cost_micros must not be negative') end
local ttl, ttl_err = parse_int('ttl_seconds', ARGV[2])
if ttl == nil then return redis.error_reply(ttl_err) end
if ttl <= 0 then return redis.error_reply('ERR ttl_seconds must be positive') end
local after_warmup = ARGV[3]
if after_warmup ~= '0' and after_warmup ~= '1' then
  return redis.error_reply("ERR after_warmup must be '0' or '1', got " .. tostring(after_warmup))
end

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

-- The amount of a reservation field of the record: 0 when absent, nil when corrupt.
local function record_amount(field)
  local raw = redis.call('HGET', record_key, field)
  if not raw then return 0 end
  local n = parse_int(field, raw)
  if n == nil or n < 0 then return nil end
  return n
end

-- What the counter holds for this request, see the table in the header.
local function counted_by_counter()
  local record_warmup = redis.call('HGET', record_key, 'tenant_warmup_id')
  if record_warmup then
    if record_warmup == redis.call('HGET', quota_key, 'warmup_id') then
      return record_amount('tenant_counted_micros')
    end
    return cost
  end
  if after_warmup == '1' then
    return cost
  end
  if redis.call('HEXISTS', record_key, 'api_key_id') == 1 then
    return record_amount('reserved_micros')
  end
  return 0
end

local counted = counted_by_counter()
if counted == nil then
  return redis.error_reply('ERR corrupt request record ' .. record_key)
end

local delta = cost - counted
-- %.0f prints an integral double below 2^53 exactly, never in exponent form.
local delta_text = string.format('%.0f', delta)
local used = redis.call('HINCRBY', quota_key, 'used_micros', delta_text)
redis.call('HSET', record_key, 'tenant_adjusted', delta_text)
redis.call('EXPIRE', record_key, ttl)

return {'applied', delta, used, limit - used}
