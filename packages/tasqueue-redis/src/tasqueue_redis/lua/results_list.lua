-- The unexpired ids of a success/failed list, oldest first. KEYS: list. ARGV: list_ttl_us (0: all).
local ttl = tonumber(ARGV[1])
if ttl <= 0 then
  return redis.call('ZRANGE', KEYS[1], 0, -1)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZRANGEBYSCORE', KEYS[1], now - ttl, '+inf')
