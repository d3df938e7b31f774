--[[
window_settle.lua: settles a request "to cost" on the budget windows that reserved it
(issue 12, docs/budget-windows.md), once per request and window. The caller passes the
windows the request's LEDGER ROW names (fixed at admission), never the current ones: a
request admitted before a boundary settles into the window that reserved it, and never
touches the new window's counter (unlike a reset that zeroes freshly recorded spend).

KEYS[1]       request record hash bq:{t:<tenant>}:req:<requestId>
KEYS[1+i]     window counter hash bq:{t:<tenant>}:win:<window id>, i = 1..n (same hash tag)
ARGV[1]       cost_micros: the final cost, non-negative integer (0 for a void or a release)
ARGV[2]       ttl_seconds: expiry of the record (refreshed)

Per window W, what the counter holds for the request:
  - the record's wb:<W> equals W's build: the counter holds wn:<W> (the reservation, or what
    window_warmup.lua counted) -> the counter moves by cost - wn:<W>;
  - the record has no wb:<W> (admitted by the PostgreSQL fallback while W was live): the
    counter never held it -> cost;
  - otherwise (wb:<W> differs) W was rebuilt from a ledger snapshot that did not list this request as
    pending: that snapshot was read after the request's ledger row was settled, so the
    counter already holds the cost -> 0 (settlement always runs after the ledger commit);
  - W is gone (expired after its window ended, or lost): nothing to move; a rebuild
    reads the committed row.
The record then gets wd:<W> = the delta applied, so a replay applies nothing again.

Returns {'applied', delta_1, ..., delta_n} (a replayed window reports its first delta),
or an error reply for malformed ARGV or a corrupt field (nothing changes).
]]

-- requires: lib/integers.lua

if #KEYS < 1 then return redis.error_reply('ERR window_settle expects at least 1 key, got 0') end
if #ARGV ~= 2 then return redis.error_reply('ERR window_settle expects 2 arguments, got ' .. #ARGV) end
local cost, cost_err = parse_non_negative('cost_micros', ARGV[1])
if cost == nil then return redis.error_reply(cost_err) end
local ttl, ttl_err = parse_ttl(ARGV[2])
if ttl == nil then return redis.error_reply(ttl_err) end
local record = KEYS[1]

-- Plan every window before the first write: a script that fails halfway is not rolled back.
local plan = {}
for i = 2, #KEYS do
  local wkey = KEYS[i]
  local done = redis.call('HGET', record, 'wd:' .. wkey)
  if done then
    plan[i] = {replay = tonumber(done) or 0}
  elseif redis.call('EXISTS', wkey) == 0 then
    plan[i] = {delta = 0, write = false}
  else
    local held = 0
    local build = redis.call('HGET', record, 'wb:' .. wkey)
    if build == false then
      held = 0
    elseif build == (redis.call('HGET', wkey, 'build') or '') then
      held = parse_non_negative('wn', redis.call('HGET', record, 'wn:' .. wkey) or '0')
      if held == nil then return redis.error_reply('ERR corrupt request record ' .. record) end
    else
      held = cost
    end
    plan[i] = {delta = cost - held, write = true}
  end
end

local reply = {'applied'}
for i = 2, #KEYS do
  local p = plan[i]
  if p.replay ~= nil then
    reply[i] = p.replay
  else
    local text = string.format('%.0f', p.delta)
    if p.write and p.delta ~= 0 then
      redis.call('HINCRBY', KEYS[i], 'used_micros', text)
      redis.call('HINCRBY', KEYS[i], 'version', 1)
    end
    redis.call('HSET', record, 'wd:' .. KEYS[i], text)
    reply[i] = p.delta
  end
end
if #KEYS > 1 then
  redis.call('HSET', record, 'cost_micros', ARGV[1])
  redis.call('EXPIRE', record, ttl)
end
return reply
