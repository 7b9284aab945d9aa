-- Publish messages. KEYS: pending delayed data wake sent.
-- ARGV: call window_ms (id, data, delay_ms)...
-- An id the queue already holds (ready, delayed or leased) is skipped. `call` names this call
-- (a fresh id per call): the client re-sends a call whose reply was lost with its connection,
-- and by then the first run's jobs may have been fetched, run and acked, so skipping held ids
-- is not enough. Each call leaves a receipt in `sent` for window_ms, and a call that finds its
-- receipt did its work already: it returns -1 and does nothing. Otherwise returns how many
-- messages were new.
local sent = KEYS[5]
local call = ARGV[1]
local window = tonumber(ARGV[2])
if redis.call('ZSCORE', sent, call) then
  return -1
end
local ready = {}
local added = 0
local now = now_ms()
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[3], id, ARGV[i + 1]) == 1 then
    added = added + 1
    local delay = tonumber(ARGV[i + 2])
    if delay > 0 then
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
redis.call('ZADD', sent, now, call)
-- Drop receipts past the window only when the oldest is, so most calls write nothing more;
-- the key of a queue nobody publishes to expires whole.
local oldest = redis.call('ZRANGE', sent, 0, 0, 'WITHSCORES')
if tonumber(oldest[2]) < now - window then
  redis.call('ZREMRANGEBYSCORE', sent, '-inf', now - window)
end
if redis.call('PTTL', sent) < window then
  redis.call('PEXPIRE', sent, window * 2)
end
return added
