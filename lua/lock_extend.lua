--[[
lock_extend.lua: the watchdog's renewal (M7.2): moves the lock's expiry to ttl_ms from now,
only for the holder that owns it. A holder that lost the lock (it expired and someone else
took it, or an operator released it) gets 0 and must stop writing.

KEYS[1]  the lock hash  bq:lock:{c:<conversation>}
ARGV[1]  owner          the token the holder took the lock with
ARGV[2]  ttl_ms         positive integer

Returns 1 when extended, 0 when the lock is not held by this owner (nothing changes).
]]

-- requires: lib/integers.lua

local arity = arity_error('lock_extend', 1, 2)
if arity then return redis.error_reply(arity) end
local ttl, ttl_err = parse_non_negative('ttl_ms', ARGV[2])
if ttl == nil then return redis.error_reply(ttl_err) end
if ttl < 1 then return redis.error_reply('ERR ttl_ms must be positive') end
if ARGV[1] == '' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
