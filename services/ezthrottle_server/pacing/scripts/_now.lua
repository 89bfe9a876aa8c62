-- now_ms(): the time the caller gave in ARGV[1] (ms), or the Redis server's
-- clock when it gave '' (included by _prelude.lua, flow_acquire.lua and
-- respace.lua: each takes its ARGV[1] so).
local function now_ms()
  if ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
