-- Prepended to enqueue.lua for an enqueue that also stores the jobs' records (RedisResults
-- keys on the same server), so that both take one round trip. Records go first: a worker
-- that fetches a job finds its record.
-- KEYS: n record keys, then enqueue's. ARGV: px_ms n (mode value)*n, then enqueue's.
--   mode 'n': only if absent (a new job's record); 'u': always (unversioned);
--   upper case ('N'/'U'): persist (no expiry).
-- Then it drops its part of KEYS and ARGV, so that enqueue.lua reads its own as always.
local function drop_front(list, count)
  local n = #list
  for i = 1, n - count do
    list[i] = list[i + count]
  end
  for i = n - count + 1, n do
    list[i] = nil
  end
end

local px = tonumber(ARGV[1])
local records = tonumber(ARGV[2])
-- A replay of a call that ran already (enqueue.lua's receipt key, the last of KEYS) writes
-- nothing: by now the job may have run, and a schedule been cancelled.
replayed = redis.call('EXISTS', KEYS[#KEYS]) == 1
for i = 1, replayed and 0 or records do
  local mode, value = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local args = {KEYS[i], value}
  if mode == 'n' or mode == 'N' then
    args[#args + 1] = 'NX'
  end
  if px > 0 and (mode == 'n' or mode == 'u') then
    args[#args + 1] = 'PX'
    args[#args + 1] = px
  end
  redis.call('SET', unpack(args))
end
drop_front(KEYS, records)
drop_front(ARGV, 2 + 2 * records)
