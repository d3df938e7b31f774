--[[
lock_release.lua: releases a lock by compare-and-delete (M7.2): only the holder that owns
it can release it; a holder whose lock expired and was taken by another gets 0 and the new
holder keeps it. (Operators release a stuck lock with a plain DEL: /admin/locks, npm run locks.)

KEYS[1]  the lock hash  bq:lock:{c:<conversation>}
ARGV[1]  owner          the token the holder took the lock with

Returns 1 when released, 0 when the lock is not held by this owner (nothing changes).
A release publishes on <KEYS[1]>:released (no extra round trip), so a waiter subscribed there
tries again at once instead of at its next poll.
]]

-- requires: lib/integers.lua

local arity = arity_error('lock_release', 1, 1)
if arity then return redis.error_reply(arity) end
if ARGV[1] == '' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[1] .. ':released', '1')
return 1
