-- Publish messages. KEYS: pending delayed data wake. ARGV: (id, data, delay_ms)...
-- An id the queue already holds (ready, delayed or leased) is skipped, which also makes a
-- replay of this script (redis-py retries after a lost reply) harmless. Returns how many were new.
local ready = {}
local added = 0
local now = nil
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[3], id, ARGV[i + 1]) == 1 then
    added = added + 1
    local delay = tonumber(ARGV[i + 2])
    if delay > 0 then
      now = now or now_ms()
      redis.call('ZADD', KEYS[2], now + delay, id)
    else
      ready[#ready + 1] = id
    end
  end
end
-- LPUSH in order: the list's right end is its head (claim pops from the right), so FIFO holds.
if #ready > 0 then
  bulk('LPUSH', KEYS[1], ready)
end
-- Delayed ones wake a worker too, so that it learns the new earliest due time.
if added > 0 then
  wake(KEYS[4])
end
return added
