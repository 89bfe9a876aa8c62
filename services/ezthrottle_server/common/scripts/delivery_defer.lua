-- Put a webhook send back for later without an attempt (its host's pace, webhook_pace.lua):
-- scheduled as a retry is, its send entry acknowledged. The webhook's state, attempts
-- and delivery window are untouched. An edge's first attempt held back (no send entry)
-- leaves the webhook to the delivery service: it is no longer the edge's ('<i>:edge').
-- KEYS[1] send stream   KEYS[2] scheduled zset   KEYS[3] webhooks hash (the edge's only)
-- ARGV[1] consumer group   ARGV[2] entry id ('' if none)   ARGV[3] due (ms)   ARGV[4] scheduled member
-- ARGV[5] webhook index (the edge's only)
--@include common/_ack.lua
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[4])
ack_entry(KEYS[1])
if KEYS[3] then
  redis.call('HDEL', KEYS[3], ARGV[5] .. ':edge')
end
return 1
