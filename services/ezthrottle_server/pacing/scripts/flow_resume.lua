-- A flow-control key's resume: the jobs it held back are due now.
-- KEYS[1] a partition's delayed set   ARGV[1] now (ms)   ARGV[2..] members ("<region>|<job id>") the key held back
-- Each member still in the set is due at ARGV[1] (one gone meanwhile stays gone), and the coordinator,
-- which may sleep until later, is told (common/_wake.lua). Returns how many were brought forward.
--@include common/_wake.lua
local moved = 0
for i = 2, #ARGV do
  moved = moved + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
if moved > 0 then
  wake_coordinator('delayed')
end
return moved
