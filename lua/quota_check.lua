--[[
quota_check.lua: admission (M2.1). Checks AND reserves a request's worst-case cost
against the tenant quota and the API key budget in ONE atomic call, so two
concurrent requests can never both pass a check that only one of them fits.

KEYS[1]  tenant quota hash     bq:{t:<tenant>}:quota            { limit_micros, used_micros, version }
KEYS[2]  api key budget hash   bq:{t:<tenant>}:key:<apiKeyId>   { budget_micros (-1 = unlimited), spent_micros, version }
KEYS[3]  request record hash   bq:{t:<tenant>}:req:<requestId>
ARGV[1]  amount_micros   non-negative integer: the reservation (worst-case cost)
ARGV[2]  ttl_seconds     positive integer: expiry of the request record (refreshed here)
ARGV[3]  api_key_id      non-empty string, stored in the request record
ARGV[4]  now_ms          non-negative integer, stored as reserved_at
Budget windows (issue 12, docs/budget-windows.md), optional, n >= 0 of them:
KEYS[3+i]        window counter hash bq:{t:<tenant>}:win:<window id>  { used_micros, build, version }
ARGV[4+2i-1]     that window's limit_micros (non-negative integer)
ARGV[4+2i]       its subject: 'tenant' or 'key' (names the denial status)
The caller computes the current window of every cap from its own clock and passes its
counter: a new window is simply a new key, so turnover needs no reset that could zero
freshly recorded spend. A reservation must fit the tenant quota, the key budget AND every
window; it is added to all of them or to none.

Returns {status, reserved_micros, tenant_remaining_micros, key_remaining_micros}
  'reserved'            used and spent were incremented by amount, each hash's version by 1
                        (the consistency check's compare-and-set token); the record was written
  'duplicate'           the request record already exists: nothing changes and
                        reserved_micros is the ORIGINAL reservation (idempotent per request id)
  'insufficient_quota'  used + amount > limit; nothing changes (reserved_micros = 0)
  'budget_exceeded'     budget >= 0 and spent + amount > budget; nothing changes
  'tenant_missing'      the quota hash is not cached: the caller warms it up and retries
  'key_missing'         the key budget hash is not cached: the caller warms it up and retries
  'window_missing'      (windows only) {status, 0, 0, 0, i}: window i's hash is not cached: the
                        caller rebuilds it from the ledger (window_warmup.lua) and retries
A window that cannot take the amount answers 'insufficient_quota' (a tenant window) or
'budget_exceeded' (a key window) with a 5th field, the window's index i; its remaining
amounts are the tenant's and the key's as above.
On 'reserved' the record also holds, per window, wn:<window key> = the amount and
wb:<window key> = the window hash's build: what settlement (window_settle.lua) needs.
Remaining amounts are what a new reservation could still take: never below 0 (a settled
overage is reported as 0), key_remaining_micros is -1 when the key is unlimited, and
both are 0 when the hash is not cached (missing statuses, or a duplicate whose
counters were evicted).
Malformed ARGV or a corrupt counter -> error reply, nothing changes.
All money is integers; Lua numbers are doubles, exact up to 2^53, and amounts are
passed to HINCRBY as the caller's canonical decimal strings, never reformatted.
]]

-- requires: lib/integers.lua

local function read_int(key, field, default)
  local raw = redis.call('HGET', key, field)
  if not raw then
    return default
  end
  -- Only what HINCRBY itself accepts: a corrupt value must be caught before the first
  -- write, because a script that fails halfway is not rolled back.
  if not is_canonical_int(raw) then
    return nil
  end
  return tonumber(raw)
end

local function remaining(limit, used)
  if limit - used < 0 then
    return 0
  end
  return limit - used
end

local windows = #KEYS - 3
if windows < 0 then
  return redis.error_reply('ERR quota_check expects 3 keys, got ' .. #KEYS)
end
if #ARGV ~= 4 + 2 * windows then
  local for_windows = ''
  if windows > 0 then for_windows = ' for ' .. windows .. ' windows' end
  return redis.error_reply('ERR quota_check expects ' .. (4 + 2 * windows) .. ' arguments' .. for_windows .. ', got ' .. #ARGV)
end
local window_limits = {}
for i = 1, windows do
  local limit, limit_err = parse_non_negative('window limit_micros', ARGV[3 + 2 * i])
  if limit == nil then return redis.error_reply(limit_err) end
  local subject = ARGV[4 + 2 * i]
  if subject ~= 'tenant' and subject ~= 'key' then
    return redis.error_reply("ERR window subject must be 'tenant' or 'key', got " .. tostring(subject))
  end
  window_limits[i] = limit
end
local amount, amount_err = parse_non_negative('amount_micros', ARGV[1])
if amount == nil then return redis.error_reply(amount_err) end
local ttl, ttl_err = parse_ttl(ARGV[2])
if ttl == nil then return redis.error_reply(ttl_err) end
local api_key_id = ARGV[3]
if api_key_id == '' then return redis.error_reply('ERR api_key_id must not be empty') end
local now_ms, now_err = parse_non_negative('now_ms', ARGV[4])
if now_ms == nil then return redis.error_reply(now_err) end

local quota_key, budget_key, record_key = KEYS[1], KEYS[2], KEYS[3]

-- Reads both counters; returns nil plus an error when a cached hash is corrupt, because
-- admitting against an unreadable counter could overspend.
local function read_counters()
  local limit = read_int(quota_key, 'limit_micros', nil)
  local used = read_int(quota_key, 'used_micros', 0)
  if limit == nil or used == nil then
    return nil, 'ERR corrupt tenant quota hash ' .. quota_key
  end
  local budget = read_int(budget_key, 'budget_micros', nil)
  local spent = read_int(budget_key, 'spent_micros', 0)
  if budget == nil or spent == nil then
    return nil, 'ERR corrupt api key budget hash ' .. budget_key
  end
  return {limit = limit, used = used, budget = budget, spent = spent}
end

local function key_remaining(c)
  if c.budget < 0 then
    return -1
  end
  return remaining(c.budget, c.spent)
end

if redis.call('EXISTS', record_key) == 1 then
  -- The request was admitted before (a retry, a replayed activity, a duplicate HTTP call).
  redis.call('EXPIRE', record_key, ttl)
  local reserved = read_int(record_key, 'reserved_micros', 0) or 0
  local tenant_left, key_left = 0, 0
  if redis.call('EXISTS', quota_key) == 1 then
    local limit = read_int(quota_key, 'limit_micros', nil)
    local used = read_int(quota_key, 'used_micros', 0)
    if limit ~= nil and used ~= nil then tenant_left = remaining(limit, used) end
  end
  if redis.call('EXISTS', budget_key) == 1 then
    local budget = read_int(budget_key, 'budget_micros', nil)
    local spent = read_int(budget_key, 'spent_micros', 0)
    if budget ~= nil and spent ~= nil then
      if budget < 0 then key_left = -1 else key_left = remaining(budget, spent) end
    end
  end
  return {'duplicate', reserved, tenant_left, key_left}
end

if redis.call('EXISTS', quota_key) == 0 then
  return {'tenant_missing', 0, 0, 0}
end
if redis.call('EXISTS', budget_key) == 0 then
  return {'key_missing', 0, 0, 0}
end

local c, corrupt = read_counters()
if c == nil then return redis.error_reply(corrupt) end

-- Every window is read (and checked for corruption) before the first write.
local window_used, window_build = {}, {}
for i = 1, windows do
  local wkey = KEYS[3 + i]
  if redis.call('EXISTS', wkey) == 0 then
    return {'window_missing', 0, 0, 0, i}
  end
  local used = read_int(wkey, 'used_micros', 0)
  if used == nil then return redis.error_reply('ERR corrupt budget window hash ' .. wkey) end
  window_used[i] = used
  window_build[i] = redis.call('HGET', wkey, 'build') or ''
end

if c.used + amount > c.limit then
  return {'insufficient_quota', 0, remaining(c.limit, c.used), key_remaining(c)}
end
if c.budget >= 0 and c.spent + amount > c.budget then
  return {'budget_exceeded', 0, remaining(c.limit, c.used), key_remaining(c)}
end
for i = 1, windows do
  if window_used[i] + amount > window_limits[i] then
    local status = 'budget_exceeded'
    if ARGV[4 + 2 * i] == 'tenant' then status = 'insufficient_quota' end
    return {status, 0, remaining(c.limit, c.used), key_remaining(c), i}
  end
end

c.used = redis.call('HINCRBY', quota_key, 'used_micros', ARGV[1])
c.spent = redis.call('HINCRBY', budget_key, 'spent_micros', ARGV[1])
redis.call('HINCRBY', quota_key, 'version', 1)
redis.call('HINCRBY', budget_key, 'version', 1)
redis.call('HSET', record_key,
  'reserved_micros', ARGV[1],
  'api_key_id', api_key_id,
  'reserved_at', ARGV[4])
for i = 1, windows do
  local wkey = KEYS[3 + i]
  redis.call('HINCRBY', wkey, 'used_micros', ARGV[1])
  redis.call('HINCRBY', wkey, 'version', 1)
  redis.call('HSET', record_key, 'wn:' .. wkey, ARGV[1], 'wb:' .. wkey, window_build[i])
end
redis.call('EXPIRE', record_key, ttl)

return {'reserved', amount, remaining(c.limit, c.used), key_remaining(c)}
