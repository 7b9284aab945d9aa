-- Drop waiting messages (ready or delayed, not leased) by id, for the Inspector's delete.
-- KEYS: pending delayed active data meta. ARGV: ids. Returns the ids dropped.
local pending, delayed, active, data, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  if not redis.call('ZSCORE', active, id) and redis.call('HEXISTS', data, id) == 1 then
    -- A delayed message is not in the ready list, so only a ready one pays for the LREM scan.
    if redis.call('ZREM', delayed, id) == 0 then
      redis.call('LREM', pending, 1, id)
    end
    redis.call('HDEL', data, id)
    redis.call('HDEL', meta, id)
    out[#out + 1] = id
  end
end
return out
