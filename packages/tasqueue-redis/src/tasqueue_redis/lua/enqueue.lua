-- Publish messages. KEYS: pending delayed data wake receipt. ARGV: window_ms (id, data, delay_ms)...
-- An id the queue already holds (ready, delayed or leased) is skipped. The client re-sends a
-- call whose reply was lost with its connection, and by then the first run's jobs may have been
-- fetched, run and acked, so skipping held ids is not enough: each call names a receipt key of
-- its own (`sent:<call id>`) and leaves it for window_ms; a call that finds its receipt did its
-- work already: it returns -1 and does nothing. Otherwise returns how many messages were new.
-- One key per call costs two commands where a shared sorted set of calls cost five (look up,
-- add, find the oldest, trim, renew), and it expires by itself.
if replayed == nil then
  replayed = redis.call('EXISTS', KEYS[5]) == 1
end
if replayed then
  return -1
end
local window = tonumber(ARGV[1])
local ready = {}
local added = 0
local now
for i = 2, #ARGV, 3 do
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
redis.call('SET', KEYS[5], '', 'PX', window)
return added
