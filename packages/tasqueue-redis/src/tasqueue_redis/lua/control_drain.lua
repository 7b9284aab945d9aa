-- Drop up to `limit` ready messages, oldest first, for the Inspector's purge of a whole queue.
-- KEYS: pending data meta. ARGV: limit. Returns the ids dropped.
local pending, data, meta = KEYS[1], KEYS[2], KEYS[3]
local limit = tonumber(ARGV[1])
local ids = redis.call('RPOP', pending, limit)
if not ids then
  return {}
end
bulk('HDEL', data, ids)
bulk('HDEL', meta, ids)
return ids
