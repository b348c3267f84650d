-- wrk script: PUT /kv/keyN with a small body, N cycling over 1000 keys.
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/kv/key" .. (counter % 1000), { ["Content-Type"] = "text/plain" }, "value-" .. counter)
end
