--[[
lock_acquire.lua: takes a conversation lock (M7.1) if nobody holds it, and hands out the
next fencing token in the same atomic call. The fencing counter never expires and only
ever grows, so every holder's token is larger than any earlier holder's, also after a
lock expired or was released by hand: a store that remembers the largest token it has
accepted rejects a late write of a holder that lost the lock (M7.2).

KEYS[1]  the lock hash        bq:lock:{c:<conversation>}        { owner, fence, info, acquired_at }
KEYS[2]  the fencing counter  bq:lock:{c:<conversation>}:fence  (same hash tag: one slot)
ARGV[1]  owner        non-empty token, unique per acquisition attempt (never shown to other holders' code)
ARGV[2]  ttl_ms       positive integer: the lock expires this long after it is taken or last extended
ARGV[3]  info         free text the holder leaves for operators (ids only, no prompt)
ARGV[4]  now_ms       non-negative integer, stored as acquired_at

Returns
  {1, fence}            taken now (or already held by this owner: the same fence, TTL refreshed)
  {0, pttl_ms}          held by another owner; pttl_ms is its remaining life (-1: no expiry)
Malformed ARGV -> error reply, nothing changes.
]]

-- requires: lib/integers.lua

local arity = arity_error('lock_acquire', 2, 4)
if arity then return redis.error_reply(arity) end
local owner = ARGV[1]
if owner == nil or owner == '' then return redis.error_reply('ERR owner must not be empty') end
local ttl, ttl_err = parse_non_negative('ttl_ms', ARGV[2])
if ttl == nil then return redis.error_reply(ttl_err) end
if ttl < 1 then return redis.error_reply('ERR ttl_ms must be positive') end
local now, now_err = parse_non_negative('now_ms', ARGV[4])
if now == nil then return redis.error_reply(now_err) end

local holder = redis.call('HGET', KEYS[1], 'owner')
if holder then
  if holder == owner then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(redis.call('HGET', KEYS[1], 'fence'))}
  end
  return {0, redis.call('PTTL', KEYS[1])}
end

local fence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', owner, 'fence', fence, 'info', ARGV[3], 'acquired_at', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, fence}
