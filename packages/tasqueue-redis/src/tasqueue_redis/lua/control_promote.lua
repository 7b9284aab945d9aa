-- Make delayed messages ready now (the Inspector's "run now"); they join the back of the queue.
-- KEYS: pending delayed wake. ARGV: ids. Returns the ids moved.
local pending, delayed, wakekey = KEYS[1], KEYS[2], KEYS[3]
local out = {}
for i = 1, #ARGV do
  if redis.call('ZREM', delayed, ARGV[i]) == 1 then
    redis.call('LPUSH', pending, ARGV[i])
    out[#out + 1] = ARGV[i]
  end
end
if #out > 0 then
  wake(wakekey)
end
return out
