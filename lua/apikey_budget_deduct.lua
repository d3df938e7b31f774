--[[
apikey_budget_deduct.lua: settles one request on its API key's budget, "settle to cost"
(M3.3), the same pattern as quota_deduct.lua. The caller passes the final cost (0 for a
void); the script applies delta = cost - (the reservation this key counter holds for the
request), read from the request record:

  record key_warmup_id == hash warmup_id  the warm-up that built this hash marked the
                                          record: it holds key_counted_micros
  record key_warmup_id, another value     the hash was rebuilt from a ledger snapshot in
                                          which the request was already settled: delta = 0
  no key_warmup_id, after_warmup = 1      the caller warmed the missing hash after the
                                          ledger settled the request: delta = 0
  no key_warmup_id, api_key_id present    quota_check.lua reserved reserved_micros on the
                                          tenant AND this key counter in one call (it is the
                                          only writer of api_key_id)
  nothing                                 not counted (PostgreSQL fallback): delta = cost
One race remains, outside this script: a record that outlives its counter (the hash
alone lost and rebuilt while quota_check.lua's record stays) describes the old hash;
src/activities/billing-step.ts documents it, and the consistency check heals it
(docs/consistency.md).
Idempotent per request id (marker key_adjusted).

KEYS[1]  api key budget hash   bq:{t:<tenant>}:key:<apiKeyId>   { budget_micros (-1 = unlimited), spent_micros, warmup_id, version }
KEYS[2]  request record hash   bq:{t:<tenant>}:req:<requestId>  { reserved_micros, api_key_id, key_counted_micros, key_warmup_id, key_adjusted, cost_micros, ... }
ARGV[1]  cost_micros    non-negative integer: the request's final cost, 0 for a void
ARGV[2]  ttl_seconds    positive integer: expiry of the request record (refreshed here)
ARGV[3]  after_warmup   '0', or '1' when the caller warmed the hash after the ledger settled
                        this request (the hash was missing at settlement)

Returns
  {'applied', delta_micros, spent_after_micros, budget_micros}
      spent_micros += delta, version += 1 (the consistency check's compare-and-set token),
      and in the record key_adjusted = delta and cost_micros = cost, written together;
      budget_micros is -1 for an unlimited key (the caller derives remaining = budget - spent)
  {'duplicate', stored_delta_micros}
      key_adjusted already exists: nothing changes, the delta applied first is returned
  {'key_missing'}
      the key budget hash is not cached: nothing changes and the record is NOT marked
A record that does not exist (e.g. admission went through the PostgreSQL fallback) is
created with the marker, so a later retry is still a duplicate.
Malformed ARGV or a corrupt counter or record -> error reply, nothing changes.
]]

-- requires: lib/settle.lua

return settle_to_cost({
  script = 'apikey_budget_deduct',
  missing = 'key_missing',
  label = 'api key budget hash',
  limit = 'budget_micros',
  used = 'spent_micros',
  counted = 'key_counted_micros',
  warmup = 'key_warmup_id',
  adjusted = 'key_adjusted',
  -- The caller derives remaining = budget - spent; -1 stays the unlimited marker.
  applied = function(delta, spent, budget)
    return {'applied', delta, spent, budget}
  end,
})
