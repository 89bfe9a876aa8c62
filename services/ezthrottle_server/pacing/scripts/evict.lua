--@include pacing/_prelude.lua
-- Take jobs out of a region that is down (coordinator/evacuate.py): waiting
-- jobs out of its queue, and leases of its dead nodes out of its running set,
-- so that they can be queued in another region. Only what is still there is
-- taken (a live node may have granted or released it meanwhile), and a lease
-- only once it has expired, unless the caller forces it (a request safe to
-- send twice, whose nodes are all gone).
-- (KEYS and ARGV[1..9]: see _prelude.lua; KEYS[3] and KEYS[5] are the down region's.)
-- ARGV[10] n   ARGV[11 .. 10+n] waiting job ids
-- ARGV[11+n] m   then m pairs of lease, force ('1' or '')
--
-- Returns {job ids taken from the queue, leases taken}.
local now = now_ms()
local n = tonumber(ARGV[10])
local waits, leases = {}, {}
for i = 11, 10 + n do
  if redis.call('ZREM', KEYS[3], ARGV[i]) == 1 then
    waits[#waits + 1] = ARGV[i]
    forget_customer(ARGV[i])
  end
end
local m = tonumber(ARGV[11 + n])
for i = 0, m - 1 do
  local lease, force = ARGV[12 + n + 2 * i], ARGV[13 + n + 2 * i]
  local expiry = redis.call('ZSCORE', KEYS[5], lease)
  if expiry and (force == '1' or tonumber(expiry) <= now) then
    redis.call('ZREM', KEYS[5], lease)
    leases[#leases + 1] = lease
  end
end
return {waits, leases}
