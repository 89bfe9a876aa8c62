-- delivery_claim_one.lua: delivery_claim.lua and, in the same step, the two reads the edge's first POSTs
-- need next, for one Redis only (the customer's secrets and its pace at each host have no hash tag: a
-- Redis Cluster refuses keys of several slots; there the edge makes them calls of their own):
-- the customer's webhook secrets, and each webhook the edge sends asks its place in the customer's pace at
-- its host (webhook_pace.lua's GCRA), in order, on the Redis server's clock.
--
-- KEYS: delivery_claim.lua's, then the customer's secrets hash, then one pace key per webhook the edge sends
-- ARGV: the number of delivery_claim.lua's keys and of its arguments, its arguments, then the pace's
--       interval between sends (ms; '' = no pace) and burst
--
-- Returns {own (delivery_claim.lua's answer), {primary, secondary}, {wait (ms; 0: counted, go) per pace key}};
-- the secrets and the pace are asked only when own > 0 (else {} and {}).
local ALL_KEYS, ALL_ARGV = KEYS, ARGV
local NK, NA = tonumber(ALL_ARGV[1]), tonumber(ALL_ARGV[2])
local own = (function()
  local KEYS = {unpack(ALL_KEYS, 1, NK)}
  local ARGV = {unpack(ALL_ARGV, 3, NA + 2)}
--@include common/_delivery_claim.lua
end)()
if own <= 0 then
  return {own, {}, {}}
end
local secrets = redis.call('HMGET', ALL_KEYS[NK + 1], 'primary', 'secondary')
local interval, burst = ALL_ARGV[NA + 3], tonumber(ALL_ARGV[NA + 4])
local waits = {}
if interval ~= '' then
  local ARGV = {''}  -- now_ms(): the server's clock
--@include pacing/_now.lua
  local now = now_ms()
--@include common/_webhook_pace.lua
  for i = NK + 2, #ALL_KEYS do
    waits[#waits + 1] = pace(ALL_KEYS[i], now, tonumber(interval), burst)
  end
end
return {own, secrets, waits}
