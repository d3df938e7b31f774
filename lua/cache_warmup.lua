--[[
cache_warmup.lua: builds a counter hash from a PostgreSQL ledger snapshot, in one of two
modes (M2.2, M4.3):

  create   the warm-up of a missing counter: the hash is created only if it does not
           exist, so two concurrent warm-ups cannot overwrite each other, and a late
           warm-up carrying a stale snapshot can never overwrite a live counter that
           admissions have already moved.
  replace  the consistency check's heal of a counter confirmed to have drifted: the hash
           is overwritten, but only if it is still exactly the counter the check
           confirmed (compare-and-set on its warmup_id and version, which every script
           that moves used/spent/limit bumps). A counter that moved since is left alone
           (the caller reports it busy). A hash that is gone by then is created, as in
           create mode (any snapshot is safe for a missing hash, see below).

The rebuilt used/spent counts the pending reservations of the snapshot (the ledger's
usage formula). In the same call, and only when it writes the hash, the script marks
each listed request's record with what the new counter holds for it, and the id of this
build, so settlement refunds (or charges) exactly against the counter, however the
request was admitted (quota_deduct.lua, apikey_budget_deduct.lua). The caller reads the
usage and the lists in ONE database snapshot, so they agree. Listed are:
  - every pending reservation of the snapshot ('pending', its reserved amount);
  - requests the snapshot shows settled whose Redis settlement may still come ('settled',
    the final cost): the request a settlement is warming for, and, for the consistency
    check, the subject's recently settled rows. A settlement after this call applies
    cost - cost = 0 against a counter that already holds the cost.
A 'pending' request that Redis has ALREADY settled on this counter (its record has the
counter's adjusted marker and the cost_micros lib/settle.lua stores) cannot be settled
again: the new counter holds its cost instead of the reservation (used/spent is moved
by cost - reserved) and the record is marked with the cost. This happens when the
snapshot was read before that settlement's ledger commit.

KEYS[1]      the counter hash: bq:{t:<tenant>}:quota or bq:{t:<tenant>}:key:<apiKeyId>
KEYS[2..n+1] request records to mark (bq:{t:<tenant>}:req:<requestId>, same hash tag as KEYS[1])
ARGV[1]      kind: 'tenant' (fields limit_micros, used_micros) or 'key' (budget_micros, spent_micros)
ARGV[2]      warmup_id: non-empty, unique per call; stored in the hash as warmup_id
ARGV[3]      ttl_seconds: positive integer, expiry of the records written here
ARGV[4]      limit_micros (tenant, >= 0) or budget_micros (key, >= 0, or -1 = unlimited)
ARGV[5]      used_micros / spent_micros: integer, pending reservations included
ARGV[6]      mode: 'create' or 'replace'
ARGV[7]      replace: the warmup_id the caller read from the hash ('' when it had none);
             create: ignored (pass '')
ARGV[8]      replace: the version the caller read (non-negative integer, '0' when the hash
             had none); create: ignored (pass '0')
ARGV[7+2i], ARGV[8+2i]  for the record KEYS[1+i] (i = 1..n): its role and the amount
             the new counter holds for it (non-negative integer):
               'pending'  a pending reservation of the snapshot: its reserved amount
               'settled'  a request the snapshot shows settled: its final cost (0 for a void)

Written into the hash (replacing every field in replace mode): the limit, used/spent,
warmup_id = ARGV[2] and version = max(the replaced hash's version + 1, Redis TIME in
microseconds); a new hash starts at TIME. So a version only ever grows for a counter, also
across a lost and rebuilt hash (the quota and API-key sync keep the version they copied and
never write an older one: a rebuilt counter starting again at 1 would never be synced).
Scripts add 1 per change, far fewer than one per microsecond.
Written into each record (only when the hash is written), overwriting: the new counter
holds exactly these amounts, and an id left by an earlier build must not match:
  tenant: tenant_counted_micros = amount, tenant_warmup_id = warmup_id
  key:    key_counted_micros = amount,    key_warmup_id = warmup_id
and, for a 'pending' record only, reserved_micros = amount unless the record has it
(HSETNX), so a late quota_check.lua retry of that request answers duplicate with it.

Returns 1 when the hash was written (created or replaced; records marked), 0 when it was
not (create: it already existed; replace: its warmup_id or version differ from
ARGV[7]/ARGV[8]); nothing changes then. Malformed ARGV, a KEYS/ARGV count mismatch or a
corrupt cost_micros in a record -> error reply, nothing changes. The counters are live
state, not a cache entry that may lapse: the hash gets no expiry. Every record is one
KEYS entry, so a subject with very many listed requests makes one long (but still
atomic) call.
]]

-- requires: lib/integers.lua

local FIELDS = {
  tenant = { limit = 'limit_micros', used = 'used_micros', counted = 'tenant_counted_micros', warmup = 'tenant_warmup_id', adjusted = 'tenant_adjusted', min_limit = 0 },
  key = { limit = 'budget_micros', used = 'spent_micros', counted = 'key_counted_micros', warmup = 'key_warmup_id', adjusted = 'key_adjusted', min_limit = -1 },
}

if #KEYS < 1 then
  return redis.error_reply('ERR cache_warmup expects at least 1 key, got 0')
end
local records = #KEYS - 1
if #ARGV ~= 8 + 2 * records then
  return redis.error_reply('ERR cache_warmup expects ' .. (8 + 2 * records) .. ' arguments for ' .. records .. ' records, got ' .. #ARGV)
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
local mode = ARGV[6]
if mode ~= 'create' and mode ~= 'replace' then
  return redis.error_reply("ERR mode must be 'create' or 'replace', got " .. tostring(mode))
end
local expected_warmup = ARGV[7]
local expected_version, version_err = parse_non_negative('expected_version', ARGV[8])
if expected_version == nil then return redis.error_reply(version_err) end
-- Everything is checked before the first write: a script that fails halfway is not rolled back.
local amounts = {}
for i = 1, records do
  local role = ARGV[7 + 2 * i]
  if role ~= 'pending' and role ~= 'settled' then
    return redis.error_reply("ERR record role must be 'pending' or 'settled', got " .. tostring(role))
  end
  local amount, amount_err = parse_non_negative('counted_micros', ARGV[8 + 2 * i])
  if amount == nil then return redis.error_reply(amount_err) end
  amounts[i] = amount
end

local clock = redis.call('TIME')
local version = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  if mode == 'create' then return 0 end
  local current = redis.call('HMGET', KEYS[1], 'warmup_id', 'version')
  if (current[1] or '') ~= expected_warmup or (current[2] or '0') ~= ARGV[8] then return 0 end
  if expected_version + 1 > version then version = expected_version + 1 end
end

-- A pending reservation Redis already settled on this counter: the counter holds its cost.
local counted = {}
for i = 1, records do
  counted[i] = ARGV[8 + 2 * i]
  if ARGV[7 + 2 * i] == 'pending' then
    local settled = redis.call('HMGET', KEYS[1 + i], f.adjusted, 'cost_micros')
    if settled[1] and settled[2] then
      local cost, cost_err = parse_non_negative('cost_micros', settled[2])
      if cost == nil then return redis.error_reply('ERR corrupt request record ' .. KEYS[1 + i] .. ': ' .. cost_err) end
      used = used + cost - amounts[i]
      counted[i] = settled[2]
    end
  end
end

redis.call('DEL', KEYS[1])
-- %.0f prints an integral double below 2^53 exactly, never in exponent form.
redis.call('HSET', KEYS[1], f.limit, ARGV[4], f.used, string.format('%.0f', used), 'warmup_id', warmup_id, 'version', string.format('%.0f', version))
for i = 1, records do
  local record = KEYS[1 + i]
  redis.call('HSET', record, f.counted, counted[i], f.warmup, warmup_id)
  if ARGV[7 + 2 * i] == 'pending' then
    redis.call('HSETNX', record, 'reserved_micros', ARGV[8 + 2 * i])
  end
  redis.call('EXPIRE', record, ttl)
end
return 1
