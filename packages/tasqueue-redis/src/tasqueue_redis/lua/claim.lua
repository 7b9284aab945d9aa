-- Lease up to max_count messages. KEYS: pending active delayed data meta state wake receipt,
-- then receipts of earlier claims whose replies arrived (deleted: nothing will replay those).
-- ARGV: max_count lease_ms grace_ms gap_ms limit.
-- On the way it promotes due delayed messages and gives expired leases back, so idle queues
-- need no separate mover. Returns {token, hint_ms, id1, data1, deliveries1, id2, ...}, where
-- hint_ms says when calling again may find work (-1: only an enqueue will bring any), or is
-- -1 when something was leased.
-- `receipt` is a key named after this call (a fresh id per fetch): a claim that leased anything
-- records there what it leased, so a replay of the call (its reply was lost with a connection)
-- returns the same leases instead of leaving them to run out unheld.
local pending, active, delayed, data, meta, state, wakekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local receipt = KEYS[8]
local n = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local limit = tonumber(ARGV[5])

for i = 9, #KEYS do
  redis.call('DEL', KEYS[i])
end

local before = redis.call('GET', receipt)
if before then
  local record = cmsgpack.unpack(before)
  local tok, ids = record[1], record[2]
  local out = {tonumber(tok), 0}
  local datas = redis.call('HMGET', data, unpack(ids))
  local metas = redis.call('HMGET', meta, unpack(ids))
  for i, id in ipairs(ids) do
    local count, token = parse_meta(metas[i])
    -- Only what this claim still holds: a lease that ran out may be someone else's by now.
    if token == tok and datas[i] then
      out[#out + 1] = id
      out[#out + 1] = datas[i]
      out[#out + 1] = count
    end
  end
  return out
end

local micros = now_us()  -- one TIME for the whole call
local now = math.floor(micros / 1000)
local hold, seq = liveness(state, now, tonumber(ARGV[4]), lease_ms)

-- Due delayed messages join the back of the queue, earliest due first.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
if #due > 0 then
  bulk('LPUSH', pending, due)
  bulk('ZREM', delayed, due)
end

-- Leases that ran out (plus a grace) go back to the front: they were taken before anything
-- still waiting. Not while a pause hold-off is in force (see liveness).
if now >= hold then
  local dead = redis.call('ZRANGEBYSCORE', active, '-inf', now - grace, 'LIMIT', 0, limit)
  if #dead > 0 then
    local metas = redis.call('HMGET', meta, unpack(dead))
    local margs = {}
    for i, id in ipairs(dead) do
      local count = parse_meta(metas[i])
      margs[#margs + 1] = id
      margs[#margs + 1] = count .. ' 0'
    end
    bulk('ZREM', active, dead)
    bulk('HSET', meta, margs)
    bulk('RPUSH', pending, reversed(dead))
  end
end

local out = {0, -1}
local got = 0
if n > 0 then
  local ids = redis.call('RPOP', pending, n)
  if ids then
    -- One fencing token per claim: a settle must present it, so the holder of an expired lease
    -- cannot ack or extend a later delivery of the same message. Tokens follow the server
    -- clock (µs), kept increasing: a restart from an older snapshot, or a failover to a replica
    -- that lagged, rolls `seq` back but not the clock, so no token is ever handed out twice.
    local num = math.max(micros, seq + 1)
    local tok = digits(num)
    redis.call('HSET', state, 'seq', tok)
    out[1] = num
    local datas = redis.call('HMGET', data, unpack(ids))
    local metas = redis.call('HMGET', meta, unpack(ids))
    local deadline = now + lease_ms
    local zargs, margs, taken, leased = {}, {}, {}, {}
    for i, id in ipairs(ids) do
      local d = datas[i]
      local count, token = parse_meta(metas[i])
      if token == '0' and not taken[id] then
        if not d then
          -- An element without a payload: bytes pushed by hand, or an id whose payload was
          -- deleted. It becomes a message whose data is the element itself (the worker stores
          -- undecodable data as a failed job), under its own id when that is a plain id.
          d = id
          if #id > 200 or string.find(id, '[^%w%-%._:@/+=]') then
            id = 'raw:' .. redis.sha1hex(id)
          end
          if redis.call('HSETNX', data, id, d) == 0 then
            id = nil -- the same bytes are already held: a duplicate
          else
            count = 0
          end
        end
        if id then
          taken[id] = true
          count = count + 1
          zargs[#zargs + 1] = deadline
          zargs[#zargs + 1] = id
          margs[#margs + 1] = id
          margs[#margs + 1] = count .. ' ' .. tok
          out[#out + 1] = id
          out[#out + 1] = d
          out[#out + 1] = count
          leased[#leased + 1] = id
          got = got + 1
        end
      end
    end
    if got > 0 then
      bulk('ZADD', active, zargs)
      bulk('HSET', meta, margs)
      -- Replays come within the client's retries: seconds, and never past the lease.
      redis.call('SET', receipt, cmsgpack.pack({tok, leased}), 'PX', math.min(lease_ms, 10000))
    end
  end
end

if got == n then
  -- A full batch: more may be waiting; pass the wake-up on to the next idle worker.
  if redis.call('LLEN', pending) > 0 then
    out[2] = 0
    wake(wakekey)
  end
elseif got > 0 then
  -- The caller has work and asks again when it wants more: no hint is worth three more
  -- commands here, on the path from an idle worker's wake-up to its job.
  out[2] = -1
elseif redis.call('LLEN', pending) > 0 then
  out[2] = 0 -- duplicates were dropped: call again at once
else
  local hint = -1
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then
    hint = math.max(0, tonumber(first[2]) - now)
  end
  local oldest = redis.call('ZRANGE', active, 0, 0, 'WITHSCORES')
  if oldest[2] then
    local h = math.max(0, math.max(tonumber(oldest[2]) + grace, hold) - now)
    if hint < 0 or h < hint then
      hint = h
    end
  end
  out[2] = hint
end
return out
