-- Put a webhook send back for later without an attempt (its host's pace, webhook_pace.lua):
-- scheduled as a retry is, its send entry acknowledged. The webhook's state, attempts
-- and delivery window are untouched.
-- KEYS[1] send stream   KEYS[2] scheduled zset
-- ARGV[1] consumer group   ARGV[2] entry id   ARGV[3] due (ms)   ARGV[4] scheduled member
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
