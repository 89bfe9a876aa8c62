-- Claim a job's continuation without starting a child on the server (a
-- FRUGAL step, which the client runs), so no other continuation follows.
-- KEYS[1] job record   ARGV[1] relation
-- Returns 1 if claimed now or before by this relation, 0 if another won.
if redis.call('HSETNX', KEYS[1], 'cont', ARGV[1]) == 1 then
  return 1
end
if redis.call('HGET', KEYS[1], 'cont') == ARGV[1] then
  return 1
end
return 0
