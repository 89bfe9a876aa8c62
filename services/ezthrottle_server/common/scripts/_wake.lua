-- The coordinator sleeps until the first entry of its delayed and timer sets
-- is due, and reads its workflow stream when told (coordinator/wake.py). Work
-- put ahead of that tells it on this channel (keys.coordinator_wake; pub/sub
-- is not slot-bound): 'delayed', 'timers' or 'schedules' for an entry that
-- became its set's first, 'spawn' for a workflow event.
local WAKE_CHANNEL = 'ezt:coordinator:wake'

local function wake_coordinator(what)
  redis.call('PUBLISH', WAKE_CHANNEL, what)
end

-- ZADD of a due entry to a set the coordinator sleeps on ('delayed', 'timers', 'schedules')
local function add_due(set, due, member, what)
  redis.call('ZADD', set, due, member)
  if redis.call('ZRANGE', set, 0, 0)[1] == member then
    wake_coordinator(what)
  end
end
