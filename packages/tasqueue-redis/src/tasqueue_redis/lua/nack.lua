-- Give deliveries back. KEYS: pending active delayed data meta wake.
-- ARGV: delay_ms mode (id, token, data)...
--   mode 'k': keep the data; 'r': replace it (the delivery count starts again);
--   'u': undo the fetch (a fetch cancelled before the worker saw it; the count goes back down).
-- With delay 0 the messages go to the front, first given first out. A lease no longer held with
-- that token is left alone (stale worker, or a replay). Returns how many were given back.
local delay = tonumber(ARGV[1])
local mode = ARGV[2]
local back = {}
local now = nil
local given = 0
for i = 3, #ARGV, 3 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local count, token = parse_meta(redis.call('HGET', KEYS[5], id))
  if token == tok then
    given = given + 1
    redis.call('ZREM', KEYS[2], id)
    if mode == 'r' then
      redis.call('HSET', KEYS[4], id, ARGV[i + 2])
      count = 0
    elseif mode == 'u' then
      count = math.max(count - 1, 0)
    end
    redis.call('HSET', KEYS[5], id, count .. ' 0')
    if delay > 0 then
      now = now or now_ms()
      redis.call('ZADD', KEYS[3], now + delay, id)
    else
      back[#back + 1] = id
    end
  end
end
if #back > 0 then
  bulk('RPUSH', KEYS[1], reversed(back))
end
if given > 0 then
  wake(KEYS[6])
end
return given
