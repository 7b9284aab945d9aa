-- A worker's batch of outcomes, then the acks of the deliveries they end, in one call
-- (RedisBroker.fused_settle): results_write.lua comes first, writes and announces; then, past its
-- KEYS and ARGV: KEYS per queue (active data meta); ARGV: the number of queues, per queue (count,
-- then (id, token) * count).
-- The acks do not depend on the writes: a delivery whose status write lost is acked too (the
-- lease is another worker's now, and the token makes the ack a no-op). A replay is harmless:
-- the writes replay as results_set's do, a second ack finds no lease, waiters read again.
-- Returns what results_set returns.
local queues = tonumber(ARGV[p])
p = p + 1
for _ = 1, queues do
  local count = tonumber(ARGV[p])
  ack(KEYS[k], KEYS[k + 1], KEYS[k + 2], p + 1, count)
  p = p + 1 + 2 * count
  k = k + 3
end
return table.concat(out)
