-- Settle deliveries for good. KEYS: active data meta. ARGV: (id, token)...
-- Only leases still held with that token are settled: a stale worker's ack is a no-op, and so
-- is a replay. Returns how many were settled.
local ids = {}
for i = 1, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return 0
end
local metas = redis.call('HMGET', KEYS[3], unpack(ids))
local done = {}
for i, id in ipairs(ids) do
  local _, token = parse_meta(metas[i])
  if token == ARGV[2 * i] then
    done[#done + 1] = id
  end
end
if #done > 0 then
  bulk('ZREM', KEYS[1], done)
  bulk('HDEL', KEYS[2], done)
  bulk('HDEL', KEYS[3], done)
end
return #done
