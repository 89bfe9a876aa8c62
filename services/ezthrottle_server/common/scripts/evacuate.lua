-- Move a job out of a region that is down (coordinator/evacuate.py): the
-- coordinator has already taken it out of the region's pacing queue, or found
-- it in the region's stream with no live node to read it. Each job moves once:
-- the holder it was found in goes in the same step.
--
-- A raced job still carried by another region only loses this region's copy
-- (its 'live' count drops, as when a region runs out of tries). Anything else
-- is queued in the target region's stream, counted as a reroute with the
-- reason region_down ('tried', 'reroutes', 'evacuated').
--
-- KEYS[1] job record   KEYS[2] the down region's stream   KEYS[3] the target region's stream
-- ARGV[1] the down region's consumer group   ARGV[2] its stream entry id ('' if none)
-- ARGV[3] down region   ARGV[4] target region   ARGV[5] now (ms)   ARGV[6] job id
-- ARGV[7] the job's event channel   ARGV[8] '1': an attempt may have reached the target
--         (its lease expired with its node)
--
-- Returns 1 moved, 2 dropped (another region carries it), 0 final, gone, or
-- already gone from this region (a second holder of it there).
--@include common/_ack.lua
local function ack()
  ack_entry(KEYS[2])
end

local now = tonumber(ARGV[5])
local function publish(event)
  event.ts_ms = now
  redis.call('PUBLISH', ARGV[7], cjson.encode(event))
end

local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'success' or state == 'failed' or state == 'cancelled' or state == 'expired' then
  ack()
  return 0
end
local down, target = ARGV[3], ARGV[4]
-- A job can be held twice in the down region for a moment (parked in its
-- pacing queue, its stream entry not yet acknowledged when the edge died):
-- once it has left the region, any other holder there is stale.
local left = redis.call('HGET', KEYS[1], 'left') or ''
if string.find(',' .. left .. ',', ',' .. down .. ',', 1, true) then
  ack()
  return 0
end
redis.call('HSET', KEYS[1], 'left', left == '' and down or (left .. ',' .. down))
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[1], 'maybe_sent', 1)
end
if redis.call('HGET', KEYS[1], 'mode') == 'race' and tonumber(redis.call('HGET', KEYS[1], 'live') or '1') > 1 then
  redis.call('HINCRBY', KEYS[1], 'live', -1)
  publish({type = 'region_out', region = down, error = 'region_down'})
  ack()
  return 2
end
redis.call('HINCRBY', KEYS[1], 'reroutes', 1)
local tried = redis.call('HGET', KEYS[1], 'tried') or ''
redis.call('HSET', KEYS[1], 'tried', tried .. ',' .. target)
local regions, seen = {}, {}
for r in string.gmatch(redis.call('HGET', KEYS[1], 'regions') or '', '[^,]+') do
  if r == down then r = target end
  if not seen[r] then
    seen[r] = true
    regions[#regions + 1] = r
  end
end
redis.call('HSET', KEYS[1], 'regions', table.concat(regions, ','))
local moves = redis.call('HGET', KEYS[1], 'evacuated')
redis.call('HSET', KEYS[1], 'evacuated', (moves and (moves .. ',') or '') .. down .. '>' .. target)
redis.call('XADD', KEYS[3], '*', 'job', ARGV[6])
publish({type = 'scheduled', region = target, due_ms = now, reason = 'region_down'})
ack()
return 1
