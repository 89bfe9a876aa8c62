-- pace(key, now, interval, burst): webhook_pace.lua's GCRA (included by it and delivery_claim_one.lua).
-- Returns 0 when a POST may go now (counted), else how many ms until one may (nothing counted).
local function pace(key, now, interval, burst)
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local early = tat + interval - now - interval * burst
  if early > 0 then
    return math.ceil(early)
  end
  redis.call('SET', key, tostring(tat + interval), 'PX', math.ceil(tat + interval - now) + 1000)
  return 0
end
