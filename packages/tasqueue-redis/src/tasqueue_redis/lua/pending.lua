-- The messages waiting to be fetched, oldest first: ready ones, then delayed ones by due time.
-- KEYS: pending delayed data. An element with no payload is returned as it is.
local out = {}
local ids = reversed(redis.call('LRANGE', KEYS[1], 0, -1))
for i = 1, #ids, 1000 do
  local part = {unpack(ids, i, math.min(i + 999, #ids))}
  local datas = redis.call('HMGET', KEYS[3], unpack(part))
  for j, id in ipairs(part) do
    out[#out + 1] = datas[j] or id
  end
end
local later = redis.call('ZRANGE', KEYS[2], 0, -1)
for i = 1, #later, 1000 do
  local part = {unpack(later, i, math.min(i + 999, #later))}
  local datas = redis.call('HMGET', KEYS[3], unpack(part))
  for j = 1, #part do
    if datas[j] then
      out[#out + 1] = datas[j]
    end
  end
end
return out
