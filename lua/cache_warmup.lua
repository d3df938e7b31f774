--[[
cache_warmup.lua: cache warm-up with SETNX semantics for a whole counter hash (M2.2).
A counter missing from Redis is rebuilt from PostgreSQL; the hash is created only if
it does not exist, so two concurrent warm-ups cannot overwrite each other, and a late
warm-up carrying a stale database snapshot can never overwrite a live counter that
admissions have already moved.

The rebuilt used/spent counts the pending reservations of the snapshot (the ledger's
usage formula). In the same call, and only when it creates the hash, the script marks
each of those requests' records with what the new counter holds for it, and the id of
this warm-up, so settlement refunds (or charges) exactly against the counter, however
the request was admitted (quota_deduct.lua, apikey_budget_deduct.lua). The caller reads
the usage and the pending list in ONE database snapshot, so the two agree. A warm-up run
by a settlement also marks the request being settled: the snapshot, read after its
ledger commit, holds its final cost.

KEYS[1]      the counter hash to create: bq:{t:<tenant>}:quota or bq:{t:<tenant>}:key:<apiKeyId>
KEYS[2..n+1] request records to mark (bq:{t:<tenant>}:req:<requestId>, same hash tag as KEYS[1])
ARGV[1]      kind: 'tenant' (fields limit_micros, used_micros) or 'key' (budget_micros, spent_micros)
ARGV[2]      warmup_id: non-empty, unique per warm-up call; stored in the hash as warmup_id
ARGV[3]      ttl_seconds: positive integer, expiry of the records written here
ARGV[4]      limit_micros (tenant, >= 0) or budget_micros (key, >= 0, or -1 = unlimited)
ARGV[5]      used_micros / spent_micros: integer, pending reservations included
ARGV[4+2i], ARGV[5+2i]  for the record KEYS[1+i] (i = 1..n): its role and the amount
             the new counter holds for it (non-negative integer):
               'pending'  a pending reservation of the snapshot: its reserved amount
               'settled'  the request being settled: its final cost (0 for a void)

Written into each record (only when the hash is created), overwriting: the new counter
holds exactly these amounts, and an id left by an earlier incarnation must not match:
  tenant: tenant_counted_micros = amount, tenant_warmup_id = warmup_id
  key:    key_counted_micros = amount,    key_warmup_id = warmup_id
and, for a 'pending' record only, reserved_micros = amount unless the record has it
(HSETNX), so a late quota_check.lua retry of that request answers duplicate with it.

Returns 1 when the hash was created (records marked), 0 when it already existed
(nothing changes). Malformed ARGV or a KEYS/ARGV count mismatch -> error reply,
nothing changes. The counters are live state, not a cache entry that may lapse: the
hash gets no expiry. Every record is one KEYS entry, so a tenant with very many
pending reservations makes one long (but still atomic) call.
]]

-- requires: lib/integers.lua

local FIELDS = {
  tenant = { limit = 'limit_micros', used = 'used_micros', counted = 'tenant_counted_micros', warmup = 'tenant_warmup_id', min_limit = 0 },
  key = { limit = 'budget_micros', used = 'spent_micros', counted = 'key_counted_micros', warmup = 'key_warmup_id', min_limit = -1 },
}

if #KEYS < 1 then
  return redis.error_reply('ERR cache_warmup expects at least 1 key, got 0')
end
local records = #KEYS - 1
if #ARGV ~= 5 + 2 * records then
  return redis.error_reply('ERR cache_warmup expects ' .. (5 + 2 * records) .. ' arguments for ' .. records .. ' records, got ' .. #ARGV)
end
local f = FIELDS[ARGV[1]]
if f == nil then
  return redis.error_reply("ERR kind must be 'tenant' or 'key', got " .. tostring(ARGV[1]))
end
local warmup_id = ARGV[2]
if warmup_id == '' then return redis.error_reply('ERR warmup_id must not be empty') end
local ttl, ttl_err = parse_ttl(ARGV[3])
if ttl == nil then return redis.error_reply(ttl_err) end
local limit, limit_err = parse_int(f.limit, ARGV[4])
if limit == nil then return redis.error_reply(limit_err) end
if limit < f.min_limit then return redis.error_reply('ERR ' .. f.limit .. ' must be >= ' .. f.min_limit) end
local used, used_err = parse_int(f.used, ARGV[5])
if used == nil then return redis.error_reply(used_err) end
-- Everything is checked before the first write: a script that fails halfway is not rolled back.
for i = 1, records do
  local role = ARGV[4 + 2 * i]
  if role ~= 'pending' and role ~= 'settled' then
    return redis.error_reply("ERR record role must be 'pending' or 'settled', got " .. tostring(role))
  end
  local amount, amount_err = parse_non_negative('counted_micros', ARGV[5 + 2 * i])
  if amount == nil then return redis.error_reply(amount_err) end
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], f.limit, ARGV[4], f.used, ARGV[5], 'warmup_id', warmup_id)
for i = 1, records do
  local record, role, amount = KEYS[1 + i], ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  redis.call('HSET', record, f.counted, amount, f.warmup, warmup_id)
  if role == 'pending' then
    redis.call('HSETNX', record, 'reserved_micros', amount)
  end
  redis.call('EXPIRE', record, ttl)
end
return 1
