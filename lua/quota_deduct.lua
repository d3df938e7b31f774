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
src/activities/billing-step.ts documents it, and the consistency check heals it
(docs/consistency.md).
Idempotent per request id: the delta is applied at most once (marker tenant_adjusted),
whatever retries or activity replays happen.

KEYS[1]  tenant quota hash     bq:{t:<tenant>}:quota           { limit_micros, used_micros, warmup_id, version }
KEYS[2]  request record hash   bq:{t:<tenant>}:req:<requestId>  { reserved_micros, api_key_id, tenant_counted_micros, tenant_warmup_id, tenant_adjusted, cost_micros, ... }
ARGV[1]  cost_micros    non-negative integer: the request's final cost, 0 for a void
ARGV[2]  ttl_seconds    positive integer: expiry of the request record (refreshed here)
ARGV[3]  after_warmup   '0', or '1' when the caller warmed the hash after the ledger settled
                        this request (the hash was missing at settlement)

Returns
  {'applied', delta_micros, used_after_micros, remaining_after_micros}
      used_micros += delta, version += 1 (the consistency check's compare-and-set token),
      and in the record tenant_adjusted = delta and cost_micros = cost, written together;
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

-- requires: lib/settle.lua

return settle_to_cost({
  script = 'quota_deduct',
  missing = 'tenant_missing',
  label = 'tenant quota hash',
  limit = 'limit_micros',
  used = 'used_micros',
  counted = 'tenant_counted_micros',
  warmup = 'tenant_warmup_id',
  adjusted = 'tenant_adjusted',
  applied = function(delta, used, limit)
    return {'applied', delta, used, limit - used}
  end,
})
