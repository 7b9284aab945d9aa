-- Renew leases. KEYS: active meta state. ARGV: lease_ms gap_ms (id, token)...
-- Returns the 1-based positions of the leases that are no longer held (settled, or expired and
-- taken back): their worker must stop. A replay renews again, which is harmless.
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
liveness(KEYS[3], now, tonumber(ARGV[2]), lease_ms)
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
local lost = {}
if #ids == 0 then
  return lost
end
local metas = redis.call('HMGET', KEYS[2], unpack(ids))
local deadline = now + lease_ms
local renew = {}
for i, id in ipairs(ids) do
  local _, token = parse_meta(metas[i])
  if token == ARGV[2 * i + 2] then
    renew[#renew + 1] = deadline
    renew[#renew + 1] = id
  else
    lost[#lost + 1] = i
  end
end
if #renew > 0 then
  bulk('ZADD', KEYS[1], renew)
end
return lost
