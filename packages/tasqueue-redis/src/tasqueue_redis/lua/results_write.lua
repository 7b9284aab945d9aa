-- Results writes: the part shared by results_set.lua and settle.lua, which each return.
-- KEYS: n value keys, then the nl list keys (success and/or failed ZSETs) touched.
-- ARGV: px_ms list_ttl_us list_limit r (record key prefix)*r n, then per value key (mode, value),
-- then nl, then per list key ('s' or 'f', count, id...), then the channel and message that
-- announce the listed ids to waiters ('' '': nobody to tell). Values start with a 16-byte
-- decimal version header (-1: unversioned).
--   mode 'v'/'V': versioned: written only if the key is absent or holds a lower version;
--   mode 'u'/'U': always written. Upper case: persist (no expiry). A mode may go on with
--   's<id>' or 'f<id>': that id joins the success or failed list if (only if) the write happens,
--   so a refused status write (a worker that lost its lease) lists nothing.
-- Versions stay below 2^53, so Lua's doubles compare them exactly. Replays are harmless: a
-- versioned write does not win twice, a plain one rewrites the same bytes, a list add moves
-- the id to the end again.
-- A list past list_limit drops its oldest ids, and with them the finished jobs' records: the
-- keys <record prefix><id>, so that records are bounded by count, not only by age. Without
-- record prefixes (a Cluster, where those keys live on other nodes) the dropped ids are
-- returned instead, for the caller to delete.
-- Leaves `out` (one '1'/'0' per value key), `dropped`, and `p` and `k`: the first ARGV and KEYS
-- after its own.
local px = tonumber(ARGV[1])
local list_ttl = tonumber(ARGV[2])
local list_limit = tonumber(ARGV[3])
local records = {}
for i = 1, tonumber(ARGV[4]) do
  records[i] = ARGV[4 + i]
end
local n = tonumber(ARGV[5 + #records])
local out = {}
local dropped = {}
-- Ids of the writes that happened, for the list keys (KEYS[n + 1] success, KEYS[n + 2] failed).
local listed = {s = {}, f = {}}
local p = 6 + #records
for i = 1, n do
  local mode, value = ARGV[p], ARGV[p + 1]
  p = p + 2
  local kind = string.sub(mode, 1, 1)
  local write, happened = true, true
  if kind == 'v' or kind == 'V' then
    local current = redis.call('GETRANGE', KEYS[i], 0, 15)
    if current ~= '' then
      local have = tonumber(current) or -1
      local want = tonumber(string.sub(value, 1, 16))
      if have >= want then
        write = false
        -- The same value at the same version is this write replayed: it happened.
        happened = have == want and redis.call('GET', KEYS[i]) == value
      end
    end
  end
  if write then
    if px > 0 and (kind == 'v' or kind == 'u') then
      redis.call('SET', KEYS[i], value, 'PX', px)
    else
      redis.call('SET', KEYS[i], value)
    end
  end
  if happened then
    out[i] = '1'
    -- A write may carry a list entry: mode 's<id>' or 'f<id>' after its first letter.
    local list = listed[string.sub(mode, 2, 2)]
    if list then
      list[#list + 1] = string.sub(mode, 3)
    end
  else
    out[i] = '0'
  end
end

local function add(key, ids)
  if #ids == 0 then
    return
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  -- Scores are microseconds, kept increasing so that ids stay in the order they were added.
  local base = now
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] and tonumber(top[2]) >= base then
    base = tonumber(top[2]) + 1
  end
  local z = {}
  for j = 1, #ids do
    z[#z + 1] = base + j - 1
    z[#z + 1] = ids[j]
  end
  bulk('ZADD', key, z)
  -- Trim only when there is something to trim, so that most calls write nothing more.
  if list_ttl > 0 then
    local cutoff = now - list_ttl
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] and tonumber(oldest[2]) < cutoff then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('(%.0f', cutoff))
    end
    -- An idle store's lists expire whole. The key outlives every entry it holds (each
    -- add leaves it at least list_ttl to live) yet is renewed only every half list_ttl.
    local ttl_ms = math.ceil(list_ttl / 1000) + 1000
    if redis.call('PTTL', key) < ttl_ms then
      redis.call('PEXPIRE', key, math.ceil(ttl_ms * 1.5))
    end
  end
  if list_limit > 0 then
    local size = redis.call('ZCARD', key)
    if size > list_limit then
      local gone = redis.call('ZRANGE', key, 0, size - list_limit - 1)
      redis.call('ZREMRANGEBYRANK', key, 0, size - list_limit - 1)
      local doomed = {}
      for _, id in ipairs(gone) do
        dropped[#dropped + 1] = id
        for _, prefix in ipairs(records) do
          doomed[#doomed + 1] = prefix .. id
        end
      end
      for i = 1, #doomed, 1000 do
        redis.call('UNLINK', unpack(doomed, i, math.min(i + 999, #doomed)))
      end
    end
  end
end

-- Per list key: ('s' or 'f', count, id...): the ids added whatever the writes did, after those
-- of the writes that happened.
local k = n + 1
local lists = tonumber(ARGV[p])
p = p + 1
for _ = 1, lists do
  local ids = listed[ARGV[p]]
  local c = tonumber(ARGV[p + 1])
  for j = 1, c do
    ids[#ids + 1] = ARGV[p + 1 + j]
  end
  p = p + 2 + c
  add(KEYS[k], ids)
  k = k + 1
end
-- Waiters only wake and read again: announcing a write that lost is harmless.
if ARGV[p] ~= '' then
  redis.call('PUBLISH', ARGV[p], ARGV[p + 1])
end
p = p + 2
