--[[
edge_release.lua: the end of a request that edge_admit.lua let through. Its in-flight
leases are given back, and its tokens-per-minute share is settled from the estimate to
the real count: the TATs move by (real - estimate) tokens' worth of emission interval,
never below now (an idle limit has its full burst, not more). Called once per admitted
request, when its response has ended.

KEYS[1]  tenant tokens TAT          bq:{t:<tenant>}:rl:tpm
KEYS[2]  key tokens TAT             bq:{t:<tenant>}:rl:tpm:<apiKeyId>
KEYS[3]  tenant in-flight leases    bq:{t:<tenant>}:inflight
KEYS[4]  key in-flight leases       bq:{t:<tenant>}:inflight:<apiKeyId>
ARGV[1]  request_id
ARGV[2]  token_delta    real tokens minus the estimate admitted (an integer, usually negative)
ARGV[3]  tenant tpm     the limit the estimate was taken under; -1 = none
ARGV[4]  key tpm        likewise

Returns {leases_released, tats_adjusted}
Malformed ARGV -> error reply, nothing changes.
]]

-- requires: lib/integers.lua

local arity = arity_error('edge_release', 4, 4)
if arity then return redis.error_reply(arity) end
local request_id = ARGV[1]
if request_id == nil or request_id == '' then return redis.error_reply('ERR request_id must not be empty') end
local delta, err = parse_int('token_delta', ARGV[2])
if delta == nil then return redis.error_reply(err) end
local limits
limits, err = parse_limits(3, 4)
if limits == nil then return redis.error_reply(err) end

local PERIOD = 60000000
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local released = redis.call('ZREM', KEYS[3], request_id) + redis.call('ZREM', KEYS[4], request_id)
local adjusted = 0
for i = 1, 2 do
  local key, limit = KEYS[i], limits[i]
  local tat = limit > 0 and tonumber(redis.call('GET', key) or '') or nil
  if tat and delta ~= 0 then
    local new_tat = tat + delta * (PERIOD / limit)
    if new_tat <= now then
      redis.call('DEL', key)
    else
      redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
    end
    adjusted = adjusted + 1
  end
end
return {released, adjusted}
