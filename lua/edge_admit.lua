--[[
edge_admit.lua: the edge's one round trip before any workflow starts. It refuses what
cannot be admitted (money short of the estimate, a rate limit or a parallel-request cap
reached) and, when everything passes, takes the request's share of the rate limits and
an in-flight lease. The money check only reads: the atomic reservation stays
quota_check.lua's, in the request's workflow (this one may see a counter a moment old).

Rate limits are GCRA (a smooth sliding allowance, not a fixed window): a limit of L per
minute emits one unit every 60 s / L and allows a burst of L; the state is one
theoretical arrival time (TAT, microseconds of Redis TIME) per limit. Every check runs
before any write, so a refused request changes nothing and is not counted.

KEYS[1]  tenant quota hash          bq:{t:<tenant>}:quota          { limit_micros, used_micros }
KEYS[2]  api key budget hash        bq:{t:<tenant>}:key:<apiKeyId> { budget_micros, spent_micros }
KEYS[3]  tenant requests TAT        bq:{t:<tenant>}:rl:rpm
KEYS[4]  tenant tokens TAT          bq:{t:<tenant>}:rl:tpm
KEYS[5]  key requests TAT           bq:{t:<tenant>}:rl:rpm:<apiKeyId>
KEYS[6]  key tokens TAT             bq:{t:<tenant>}:rl:tpm:<apiKeyId>
KEYS[7]  tenant in-flight leases    bq:{t:<tenant>}:inflight         ZSET request id -> lease expiry (ms)
KEYS[8]  key in-flight leases       bq:{t:<tenant>}:inflight:<apiKeyId>
KEYS[9]  request record             bq:{t:<tenant>}:req:<requestId>  (exists once quota_check.lua reserved it)
ARGV[1]  estimate_micros   the request's worst-case cost (non-negative integer)
ARGV[2]  estimate_tokens   its worst-case tokens (prompt + output cap), what TPM counts
ARGV[3]  request_id        the lease member (a retry of an in-flight request keeps its lease)
ARGV[4]  lease_ms          how long a lease lives unless renewed (a crashed API frees its slots)
ARGV[5..10] limits         tenant rpm, tpm, parallel, key rpm, tpm, parallel; -1 = none

Returns {status, retry_after_ms, req_limit, req_remaining, req_reset_ms, tok_limit, tok_remaining, tok_reset_ms}
  status: 'admitted' | 'duplicate' | 'insufficient_quota' | 'budget_exceeded' | 'rate_limit_requests'
          | 'rate_limit_tokens' | 'parallel_requests' | 'tenant_missing' | 'key_missing'
  retry_after_ms: when a retry can pass (rate limits; 0 otherwise)
  req_* / tok_*: the tighter of the tenant's and the key's requests / tokens limit after
  this call (limit -1 = no such limit), for OpenAI's x-ratelimit-* headers
'duplicate': the request id was already reserved (a retry with the same Idempotency-Key):
  it passes untouched, so its workflow answers with the first outcome; nothing is taken.
'tenant_missing' / 'key_missing': a counter is not cached (the caller warms it and asks again).
Malformed ARGV or a corrupt counter -> error reply, nothing changes.
]]

-- requires: lib/integers.lua

local arity = arity_error('edge_admit', 9, 10)
if arity then return redis.error_reply(arity) end
local estimate, err = parse_non_negative('estimate_micros', ARGV[1])
if estimate == nil then return redis.error_reply(err) end
local tokens
tokens, err = parse_non_negative('estimate_tokens', ARGV[2])
if tokens == nil then return redis.error_reply(err) end
local request_id = ARGV[3]
if request_id == nil or request_id == '' then return redis.error_reply('ERR request_id must not be empty') end
local lease_ms
lease_ms, err = parse_non_negative('lease_ms', ARGV[4])
if lease_ms == nil or lease_ms == 0 then return redis.error_reply(err or 'ERR lease_ms must be positive') end
local limits
limits, err = parse_limits(5, 10)
if limits == nil then return redis.error_reply(err) end

local PERIOD = 60000000 -- one minute, in microseconds
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now / 1000)

local NO_HEADERS = {-1, 0, 0, -1, 0, 0}
local function reply(status, retry_ms, headers)
  local h = headers or NO_HEADERS
  return {status, retry_ms, h[1], h[2], h[3], h[4], h[5], h[6]}
end

if redis.call('EXISTS', KEYS[9]) == 1 then return reply('duplicate', 0) end

-- Money: read-only, against the live counters (reservations included).
local quota = redis.call('HMGET', KEYS[1], 'limit_micros', 'used_micros')
if not quota[1] then return reply('tenant_missing', 0) end
local budget = redis.call('HMGET', KEYS[2], 'budget_micros', 'spent_micros')
if not budget[1] then return reply('key_missing', 0) end
local q_limit, q_used, b_limit, b_spent
q_limit, err = parse_int('limit_micros', quota[1]); if q_limit == nil then return redis.error_reply(err) end
q_used, err = parse_int('used_micros', quota[2] or '0'); if q_used == nil then return redis.error_reply(err) end
b_limit, err = parse_int('budget_micros', budget[1]); if b_limit == nil then return redis.error_reply(err) end
b_spent, err = parse_int('spent_micros', budget[2] or '0'); if b_spent == nil then return redis.error_reply(err) end

-- One GCRA limit: what admitting `cost` would make of it. Nothing is written here.
local function gcra(key, limit, cost)
  if limit < 0 then return nil end
  local interval = PERIOD / limit
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allowed = new_tat - now <= PERIOD
  local function left(t) return math.max(0, math.floor((PERIOD - (t - now)) / interval)) end
  return {
    key = key, limit = limit, allowed = allowed, new_tat = new_tat,
    retry_us = allowed and 0 or math.min(new_tat - PERIOD - now, PERIOD),
    -- what is left now, and after this request is admitted
    remaining = left(tat), reset_us = tat - now,
    remaining_after = left(new_tat), reset_after_us = new_tat - now,
  }
end

local function tighter(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if b.remaining_after < a.remaining_after then return b end
  return a
end

local checks = {
  req_t = gcra(KEYS[3], limits[1], 1), tok_t = gcra(KEYS[4], limits[2], tokens),
  req_k = gcra(KEYS[5], limits[4], 1), tok_k = gcra(KEYS[6], limits[5], tokens),
}
local req, tok = tighter(checks.req_t, checks.req_k), tighter(checks.tok_t, checks.tok_k)
-- The x-ratelimit-* figures: the state after this call (admitted or not).
local function headers(admitted)
  local h = {-1, 0, 0, -1, 0, 0}
  for i, c in ipairs({req or false, tok or false}) do
    if c then
      local base = (i - 1) * 3
      h[base + 1] = c.limit
      h[base + 2] = admitted and c.remaining_after or c.remaining
      h[base + 3] = math.ceil((admitted and c.reset_after_us or c.reset_us) / 1000)
    end
  end
  return h
end

if q_used + estimate > q_limit then return reply('insufficient_quota', 0, headers(false)) end
if b_limit >= 0 and b_spent + estimate > b_limit then return reply('budget_exceeded', 0, headers(false)) end

for _, name in ipairs({'req_t', 'req_k'}) do
  local c = checks[name]
  if c and not c.allowed then return reply('rate_limit_requests', math.ceil(c.retry_us / 1000), headers(false)) end
end
for _, name in ipairs({'tok_t', 'tok_k'}) do
  local c = checks[name]
  if c and not c.allowed then return reply('rate_limit_tokens', math.ceil(c.retry_us / 1000), headers(false)) end
end

-- In-flight leases: expired ones (a crashed holder's) are dropped first.
local leases = {{KEYS[7], limits[3]}, {KEYS[8], limits[6]}}
for _, lease in ipairs(leases) do
  local key, limit = lease[1], lease[2]
  if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    if not redis.call('ZSCORE', key, request_id) and redis.call('ZCARD', key) >= limit then
      return reply('parallel_requests', 0, headers(false))
    end
  end
end

-- Everything passed: take the rate-limit units and the leases.
for _, c in pairs(checks) do
  redis.call('SET', c.key, string.format('%.0f', c.new_tat), 'PX', math.ceil((c.new_tat - now) / 1000) + 1000)
end
for _, lease in ipairs(leases) do
  if lease[2] > 0 then
    redis.call('ZADD', lease[1], now_ms + lease_ms, request_id)
    redis.call('PEXPIRE', lease[1], lease_ms * 2)
  end
end
return reply('admitted', 0, headers(true))
