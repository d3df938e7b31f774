--[[
quota_release.lua: undoes a fresh reservation whose admission could not be completed
(QuotaCheckStep reserved in Redis, then could not write the pending ledger row). The
counters give the reservation back and the request record is deleted, so Redis never
counts a reservation the ledger does not know, and a retry of the same request id
reserves again from scratch instead of finding a 'duplicate' nobody counted.

KEYS[1]  tenant quota hash     bq:{t:<tenant>}:quota            { limit_micros, used_micros, version }
KEYS[2]  api key budget hash   bq:{t:<tenant>}:key:<apiKeyId>   { budget_micros, spent_micros, version }
KEYS[3]  request record hash   bq:{t:<tenant>}:req:<requestId>
ARGV[1]  api_key_id      the key the reservation was made for (must match the record)

Returns {status, released_micros}
  'released'  used and spent were decremented by the record's reserved_micros and each
              hash's version incremented (each only if its hash is cached), and the
              record deleted
  'absent'    no request record: nothing to release (a second call is a no-op)
  'kept'      the record is not a pristine quota_check reservation for this key (a warm-up
              counted it, or a settlement marked it): nothing changes
Malformed ARGV or a corrupt record -> error reply, nothing changes.
]]

-- requires: lib/integers.lua

local arity = arity_error('quota_release', 3, 1)
if arity then return redis.error_reply(arity) end
local api_key_id = ARGV[1]
if api_key_id == nil or api_key_id == '' then return redis.error_reply('ERR api_key_id must not be empty') end

local quota_key, budget_key, record_key = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', record_key) == 0 then
  return {'absent', 0}
end

local fields = redis.call('HMGET', record_key, 'reserved_micros', 'api_key_id', 'tenant_adjusted', 'key_adjusted', 'tenant_warmup_id', 'key_warmup_id')
local reserved_raw, owner = fields[1], fields[2]
if not reserved_raw or owner ~= api_key_id or fields[3] or fields[4] or fields[5] or fields[6] then
  return {'kept', 0}
end
local reserved, reserved_err = parse_non_negative('reserved_micros', reserved_raw)
if reserved == nil then return redis.error_reply(reserved_err) end

if redis.call('EXISTS', quota_key) == 1 then
  redis.call('HINCRBY', quota_key, 'used_micros', -reserved)
  redis.call('HINCRBY', quota_key, 'version', 1)
end
if redis.call('EXISTS', budget_key) == 1 then
  redis.call('HINCRBY', budget_key, 'spent_micros', -reserved)
  redis.call('HINCRBY', budget_key, 'version', 1)
end
redis.call('DEL', record_key)
return {'released', reserved}
