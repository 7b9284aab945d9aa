-- Results writes (results_write.lua, which comes first). Returns one '1'/'0' per value key, or
-- the ids that fell off a list when there are no record prefixes to delete their records by.
if #records == 0 and #dropped > 0 then
  return dropped
end
return table.concat(out)
