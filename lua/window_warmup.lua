--[[
window_warmup.lua: creates a budget window's counter hash from a ledger snapshot of that
window (issue 12), only if it does not exist, so concurrent rebuilds cannot overwrite each
other nor a live counter. A brand-new window has no ledger entries: it starts at 0.

KEYS[1]      the window hash bq:{t:<tenant>}:win:<window id>
KEYS[1+i]    records of the snapshot's pending reservations in this window (same hash tag)
ARGV[1]      build: non-empty, unique per call (stored as build; records reserved against
             this hash copy it, window_settle.lua compares)
ARGV[2]      used_micros: the window's ledger usage (committed + pending), integer
ARGV[3]      expire_at_ms: when the hash may go (the window's end plus a grace)
ARGV[4]      ttl_seconds: expiry of the records written here
ARGV[4+i]    the reserved amount of record i, as the snapshot shows it

A pending reservation that Redis already settled on this window (its record has wd:<key>
and cost_micros) will not be settled again: the counter holds its cost instead.
Written into each listed record: wn:<key> = what the counter holds for it, wb:<key> = build.
Returns 1 when the hash was created, 0 when it existed (nothing changes).
]]

-- requires: lib/integers.lua

if #KEYS < 1 then return redis.error_reply('ERR window_warmup expects at least 1 key, got 0') end
local records = #KEYS - 1
if #ARGV ~= 4 + records then
  return redis.error_reply('ERR window_warmup expects ' .. (4 + records) .. ' arguments for ' .. records .. ' records, got ' .. #ARGV)
end
local build = ARGV[1]
if build == '' then return redis.error_reply('ERR build must not be empty') end
local used, used_err = parse_int('used_micros', ARGV[2])
if used == nil then return redis.error_reply(used_err) end
local expire_at, expire_err = parse_non_negative('expire_at_ms', ARGV[3])
if expire_at == nil then return redis.error_reply(expire_err) end
local ttl, ttl_err = parse_ttl(ARGV[4])
if ttl == nil then return redis.error_reply(ttl_err) end
for i = 1, records do
  local amount, amount_err = parse_non_negative('reserved_micros', ARGV[4 + i])
  if amount == nil then return redis.error_reply(amount_err) end
end

local wkey = KEYS[1]
if redis.call('EXISTS', wkey) == 1 then return 0 end

local held = {}
for i = 1, records do
  held[i] = ARGV[4 + i]
  local settled = redis.call('HMGET', KEYS[1 + i], 'wd:' .. wkey, 'cost_micros')
  if settled[1] and settled[2] then
    local cost, cost_err = parse_non_negative('cost_micros', settled[2])
    if cost == nil then return redis.error_reply('ERR corrupt request record ' .. KEYS[1 + i] .. ': ' .. cost_err) end
    used = used + cost - tonumber(ARGV[4 + i])
    held[i] = settled[2]
  end
end

redis.call('HSET', wkey, 'used_micros', string.format('%.0f', used), 'build', build, 'version', 1)
redis.call('PEXPIREAT', wkey, ARGV[3])
for i = 1, records do
  redis.call('HSET', KEYS[1 + i], 'wn:' .. wkey, held[i], 'wb:' .. wkey, build)
  redis.call('EXPIRE', KEYS[1 + i], ttl)
end
return 1
