-- Pace one customer's webhook POSTs to one destination host (GCRA), as targets are paced per domain:
-- one customer's many webhooks to one host cannot flood it, nor delay another customer's there.
-- KEYS[1] the customer's theoretical arrival time at the host (ms; keys.webhook_pace)
-- ARGV[1] now (ms; '' = the Redis server's clock, which every sender shares: a caller's own clock, read
--         before its call waited in a batch, may lag another sender's by more than a fast pace allows for)
-- ARGV[2] interval between sends (ms, 1000 / rate)   ARGV[3] burst (sends at once)
-- Returns 0 when a POST may go now (counted), else how many ms until one may (nothing counted).
--@include pacing/_now.lua
local now, interval, burst = now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local early = tat + interval - now - interval * burst
if early > 0 then
  return math.ceil(early)
end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(tat + interval - now) + 1000)
return 0
