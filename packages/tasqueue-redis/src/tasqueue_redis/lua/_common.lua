-- Prepended to every tasqueue-redis script (see _lua.py). Scripts only touch the keys they are
-- given in KEYS; a broker script's keys all share one queue's hash tag, so Cluster accepts them.

-- Whether this call is a replay of one that ran already (enqueue.lua's receipt): records.lua,
-- which runs first in a fused enqueue, looks it up once for both.
local replayed = nil

-- Redis server time in milliseconds: every deadline and due time uses this one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Redis server time in microseconds (below 2^53 until the year 2255, so exact in a double).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A whole number as its decimal digits: `..` and tostring would write 1.7e+15.
local function digits(n)
  return string.format('%.0f', n)
end

-- Run a variadic command with `list` as its arguments, in slices that fit Lua's C stack
-- (unpack of more than ~8000 values fails). Slices of 1000 keep (score, member) pairs together.
local function bulk(cmd, key, list)
  local n = #list
  for i = 1, n, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, n)))
  end
end

local function reversed(list)
  local out = {}
  for i = #list, 1, -1 do
    out[#out + 1] = list[i]
  end
  return out
end

-- Tell one idle worker blocked on the wake list that there is work; at most one token waits.
local function wake(key)
  if redis.call('LLEN', key) == 0 then
    redis.call('RPUSH', key, 1)
  end
end

-- A message's entry in the meta hash is "<deliveries> <token>": how many times its current
-- bytes were fetched, and the fencing token of its lease ("0" while it is not leased).
-- A missing entry is "0 0": never fetched.
local function parse_meta(m)
  if not m then
    return 0, '0'
  end
  local count, token = string.match(m, '^(%d+) (%d+)$')
  return tonumber(count) or 0, token or '0'
end

-- Pause detection. Live workers run claim or extend on a queue at least every `gap` ms, and
-- `state.seen` records when that last happened. A longer silence means Redis itself was paused
-- or down (or every worker was gone): leases then look expired only because nobody could renew
-- them, so reaping is held off for one lease from now, which gives live workers time to renew.
-- Returns the time from which expired leases may be reaped, and the last fencing token (`seq`,
-- read here so that a claim reads the state hash once).
local function liveness(state, now, gap, lease)
  local st = redis.call('HMGET', state, 'seen', 'hold', 'seq')
  local seen = tonumber(st[1])
  local hold = tonumber(st[2]) or 0
  if seen == nil or now - seen > gap then
    hold = now + lease
    redis.call('HSET', state, 'seen', now, 'hold', hold)
  elseif now - seen > gap / 8 then
    -- Fresh enough not to write on every call; a silence still shows within gap/8.
    redis.call('HSET', state, 'seen', now)
  end
  return hold, tonumber(st[3]) or 0
end

-- Settle deliveries for good: ARGV[from], ARGV[from + 1], ... are count pairs (id, token). Only
-- leases still held with that token are settled: a stale worker's ack is a no-op, and so is a
-- replay. Returns how many were settled.
local function ack(active, data, meta, from, count)
  if count == 0 then
    return 0
  end
  local ids = {}
  for i = 1, count do
    ids[i] = ARGV[from + 2 * i - 2]
  end
  local metas = redis.call('HMGET', meta, unpack(ids))
  local done = {}
  for i, id in ipairs(ids) do
    local _, token = parse_meta(metas[i])
    if token == ARGV[from + 2 * i - 1] then
      done[#done + 1] = id
    end
  end
  if #done > 0 then
    bulk('ZREM', active, done)
    bulk('HDEL', data, done)
    bulk('HDEL', meta, done)
  end
  return #done
end
