-- The messages waiting to be fetched, oldest first: ready ones, then delayed ones by due time;
-- at most `limit` of them, so that listing a long queue never stalls Redis (the oldest come
-- first, so one call shows what runs next). KEYS: pending delayed data. ARGV: limit.
-- An element with no payload is returned as it is.
local limit = tonumber(ARGV[1])
local out = {}
local ids = reversed(redis.call('LRANGE', KEYS[1], -limit, -1))
for i = 1, #ids, 1000 do
  local part = {unpack(ids, i, math.min(i + 999, #ids))}
  local datas = redis.call('HMGET', KEYS[3], unpack(part))
  for j, id in ipairs(part) do
    out[#out + 1] = datas[j] or id
  end
end
if #out < limit then
  local later = redis.call('ZRANGE', KEYS[2], 0, limit - #out - 1)
  for i = 1, #later, 1000 do
    local part = {unpack(later, i, math.min(i + 999, #later))}
    local datas = redis.call('HMGET', KEYS[3], unpack(part))
    for j = 1, #part do
      if datas[j] then
        out[#out + 1] = datas[j]
      end
    end
  end
end
return out
