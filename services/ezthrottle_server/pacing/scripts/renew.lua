--@include pacing/_prelude.lua
-- A live node keeps the jobs it is sending: push their leases forward.
-- (KEYS and ARGV[1..9]: see _prelude.lua; only KEYS[5] is used.)
-- ARGV[10] lease (ms)   ARGV[11..] leases (from grant.lua)
-- Only leases that still exist move (XX): a lease that expired and was
-- recovered stays recovered. Returns how many were renewed.
local until_ms = now_ms() + tonumber(ARGV[10])
local renewed = 0
for i = 11, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[5], 'XX', 'CH', until_ms, ARGV[i])
end
return renewed
