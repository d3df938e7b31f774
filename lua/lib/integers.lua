--[[
lib/integers.lua: integer parsing and argument checks shared by the quota scripts.
Redis scripts cannot include one another, so src/redis/scripts.ts prepends this file
to every script that declares `-- requires: lib/integers.lua`; everything here is a
local of the assembled chunk (Redis refuses new globals in scripts).
Each check returns the value, or nil and the exact error message the script replies
with, so the script keeps deciding when to answer redis.error_reply.
]]

local MAX_SAFE = 9007199254740991

-- A canonical decimal integer (no '+', no leading zeros, no '-0'): exactly what
-- HINCRBY accepts, so the same string is safe for Lua arithmetic and for HINCRBY.
local function is_canonical_int(value)
  return value == '0' or string.match(value, '^%-?[1-9]%d*$') ~= nil
end

-- A canonical decimal integer within 2^53 (Lua numbers are doubles, exact up to 2^53).
local function parse_int(name, value)
  if type(value) ~= 'string' or not is_canonical_int(value) then
    return nil, 'ERR ' .. name .. ' must be a canonical integer, got ' .. tostring(value)
  end
  local n = tonumber(value)
  if n == nil or n > MAX_SAFE or n < -MAX_SAFE then
    return nil, 'ERR ' .. name .. ' is outside the safe integer range'
  end
  return n
end

-- parse_int for an amount that must not be negative (money, timestamps).
local function parse_non_negative(name, value)
  local n, err = parse_int(name, value)
  if n == nil then return nil, err end
  if n < 0 then return nil, 'ERR ' .. name .. ' must not be negative' end
  return n
end

-- The ttl_seconds argument every script that writes a request record takes: an
-- expiry of 0 or less would delete the record, and with it the idempotency marker.
local function parse_ttl(value)
  local n, err = parse_int('ttl_seconds', value)
  if n == nil then return nil, err end
  if n <= 0 then return nil, 'ERR ttl_seconds must be positive' end
  return n
end

-- ARGV[first..last] as rate limits: each a positive integer, or -1 for "no limit".
-- Returns the list, or nil and the error message.
local function parse_limits(first, last)
  local limits = {}
  for i = first, last do
    local limit, err = parse_int('limit', ARGV[i])
    if limit == nil then return nil, err end
    if limit == 0 or limit < -1 then return nil, 'ERR a limit must be positive or -1' end
    limits[i - first + 1] = limit
  end
  return limits
end

local function count_of(n, noun)
  if n == 1 then return n .. ' ' .. noun end
  return n .. ' ' .. noun .. 's'
end

-- nil when KEYS and ARGV have the fixed counts a script expects, else the message
-- naming the script, e.g. 'ERR quota_check expects 3 keys, got 2'.
local function arity_error(script, key_count, arg_count)
  if #KEYS ~= key_count then
    return 'ERR ' .. script .. ' expects ' .. count_of(key_count, 'key') .. ', got ' .. #KEYS
  end
  if #ARGV ~= arg_count then
    return 'ERR ' .. script .. ' expects ' .. count_of(arg_count, 'argument') .. ', got ' .. #ARGV
  end
  return nil
end
