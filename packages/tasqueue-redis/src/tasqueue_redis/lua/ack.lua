-- Settle deliveries for good. KEYS: active data meta. ARGV: (id, token)...
-- Only leases still held with that token are settled (see ack in _common.lua). Returns how
-- many were settled.
return ack(KEYS[1], KEYS[2], KEYS[3], 1, #ARGV / 2)
