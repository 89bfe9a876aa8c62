-- ack_entry: acknowledge, then delete, the stream entry ARGV[2] ('' for none)
-- of consumer group ARGV[1] in ``stream``: every script that consumes a
-- stream entry takes the group and the entry id as its first two arguments.
local function ack_entry(stream)
  if ARGV[2] ~= '' then
    redis.call('XACK', stream, ARGV[1], ARGV[2])
    redis.call('XDEL', stream, ARGV[2])
  end
end
