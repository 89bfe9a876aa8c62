--@include pacing/_prelude.lua
-- A granted send left late (its node was busy): count it from when it left.
-- (KEYS and ARGV[1..9]: see _prelude.lua; only KEYS[2] is used.)
-- ARGV[10] how late (ms)
--
-- GCRA decides at grant time, the target counts at arrival. A send that left
-- L ms after its grant would let the sends granted after it arrive up to L ms
-- too close, so the scope's next grant waits one interval from when that send
-- left (now): tat becomes at least now + T. Reports of sends that left
-- together (a burst, many sends granted at once) move the schedule once, not
-- once each. Returns the new tat.
local late = tonumber(ARGV[10])
local tat = tonumber(redis.call('HGET', KEYS[2], 'tat'))
if not tat or late <= 0 then
  return -1
end
local t = tonumber(redis.call('HGET', KEYS[2], 't')) or 0
local left = now_ms() + t
if left > tat then
  tat = left
  redis.call('HSET', KEYS[2], 'tat', tostring(tat))
end
return math.ceil(tat)
