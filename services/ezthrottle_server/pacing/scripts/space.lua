--@include pacing/_prelude.lua
-- The moment of sending: may this send leave now, given when the scope's last
-- sends left? A scope allowed N requests/s gets at most k = max(1, floor(N))
-- sends in any window of k/N seconds plus a margin, whichever node of
-- whichever region sends them. The GCRA spaces grants; this spaces the sends
-- themselves, so the jitter between a grant and its send (a busy loop, a
-- region's longer path) cannot put N+1 requests into one second at a target
-- that counts a sliding window.
--
-- A send leaves when its answer is back on the sending node, some time after
-- this runs. ARGV[12] says how long that has lately taken there: the send is
-- recorded that much ahead of now, so its record ages out no sooner than the
-- send does at the target. A record later than its send only makes the
-- window stricter; an answer later still is recorded again as it leaves
-- (respace.lua).
--
-- KEYS[1] conf   KEYS[2] limit   KEYS[3] sent (zset: lease -> when it left, ms)
-- ARGV[1..9]: as every pacing script (_prelude.lua)
-- ARGV[10] the send's lease   ARGV[11] margin (ms)   ARGV[12] ahead (ms; optional, 0)
--
-- Returns 0 when the send is recorded and may leave now, else how long to
-- wait (ms) before asking again.
local now = now_ms()
local limits = resolve(hash(KEYS[1]), hash(KEYS[2]), now)
local rps = limits[1]
local k = math.max(1, math.floor(rps))
local window = 1000 * k / rps + tonumber(ARGV[11])
local ahead = math.max(0, tonumber(ARGV[12] or '0') or 0)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[3])
if count < k or redis.call('ZSCORE', KEYS[3], ARGV[10]) then
  redis.call('ZADD', KEYS[3], now + ahead, ARGV[10])
  redis.call('PEXPIRE', KEYS[3], math.ceil(window + ahead) + 1000)
  return 0
end
-- the send that must age out of the window first
local oldest = redis.call('ZRANGE', KEYS[3], count - k, count - k, 'WITHSCORES')
return math.max(1, math.ceil(tonumber(oldest[2]) + window - now))
