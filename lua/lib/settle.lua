--[[
lib/settle.lua: "settle to cost" on one counter, the logic quota_deduct.lua (tenant
quota, used_micros) and apikey_budget_deduct.lua (key budget, spent_micros) share.
Their headers are the contract: KEYS, ARGV, the table of what the counter holds for a
request, and the replies. This file only holds the one implementation, parametrised by
the counter's field names; src/redis/scripts.ts prepends it (and lib/integers.lua,
which it requires) to those two scripts.

settle_to_cost(counter) with counter = {
  script    name in the arity error messages, e.g. 'quota_deduct'
  missing   status when the counter hash is not cached, e.g. 'tenant_missing'
  label     the hash in the corrupt-counter message, e.g. 'tenant quota hash'
  limit     the hash's limit field, read for the reply (limit_micros / budget_micros)
  used      the hash's field settlement moves (used_micros / spent_micros)
  counted   record field a warm-up wrote: what the new hash holds for the request
  warmup    record field naming that warm-up (compared with the hash's warmup_id)
  adjusted  record field marking the settlement done, holding the delta applied
  applied   function(delta, used_after, limit) -> the script's 'applied' reply
}
]]
-- requires: lib/integers.lua

local function settle_to_cost(counter)
  local arity = arity_error(counter.script, 2, 3)
  if arity then return redis.error_reply(arity) end
  local cost, cost_err = parse_non_negative('cost_micros', ARGV[1])
  if cost == nil then return redis.error_reply(cost_err) end
  local ttl, ttl_err = parse_ttl(ARGV[2])
  if ttl == nil then return redis.error_reply(ttl_err) end
  local after_warmup = ARGV[3]
  if after_warmup ~= '0' and after_warmup ~= '1' then
    return redis.error_reply("ERR after_warmup must be '0' or '1', got " .. tostring(after_warmup))
  end

  local counter_key, record_key = KEYS[1], KEYS[2]

  local stored = redis.call('HGET', record_key, counter.adjusted)
  if stored then
    redis.call('EXPIRE', record_key, ttl)
    return {'duplicate', tonumber(stored) or 0}
  end

  if redis.call('EXISTS', counter_key) == 0 then
    return {counter.missing}
  end
  local limit = tonumber(redis.call('HGET', counter_key, counter.limit) or '')
  if limit == nil then
    return redis.error_reply('ERR corrupt ' .. counter.label .. ' ' .. counter_key)
  end

  -- The amount of a reservation field of the record: 0 when absent, nil when corrupt.
  local function record_amount(field)
    local raw = redis.call('HGET', record_key, field)
    if not raw then return 0 end
    local n = parse_int(field, raw)
    if n == nil or n < 0 then return nil end
    return n
  end

  -- What the counter holds for this request, see the table in the scripts' headers.
  local function counted_by_counter()
    local record_warmup = redis.call('HGET', record_key, counter.warmup)
    if record_warmup then
      if record_warmup == redis.call('HGET', counter_key, 'warmup_id') then
        return record_amount(counter.counted)
      end
      return cost
    end
    if after_warmup == '1' then
      return cost
    end
    -- quota_check.lua is the only writer of api_key_id: it reserved reserved_micros here.
    if redis.call('HEXISTS', record_key, 'api_key_id') == 1 then
      return record_amount('reserved_micros')
    end
    return 0
  end

  local counted = counted_by_counter()
  if counted == nil then
    return redis.error_reply('ERR corrupt request record ' .. record_key)
  end

  local delta = cost - counted
  -- %.0f prints an integral double below 2^53 exactly, never in exponent form.
  local delta_text = string.format('%.0f', delta)
  local used = redis.call('HINCRBY', counter_key, counter.used, delta_text)
  -- The consistency check's compare-and-set token: this counter moved.
  redis.call('HINCRBY', counter_key, 'version', 1)
  -- cost_micros: a rebuild from a snapshot that still shows this request pending counts
  -- the cost, not the reservation (cache_warmup.lua), since no settlement will follow.
  redis.call('HSET', record_key, counter.adjusted, delta_text, 'cost_micros', ARGV[1])
  redis.call('EXPIRE', record_key, ttl)

  return counter.applied(delta, used, limit)
end
