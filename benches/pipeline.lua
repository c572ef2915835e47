-- wrk script: HTTP/1.1 pipelining. Every write carries `depth` copies of the request for the
-- URL given to wrk (GET, wrk's default headers); wrk counts each response as one request.
-- Usage: wrk -s benches/pipeline.lua http://127.0.0.1:PORT/plaintext -- 16
local depth = 16

function init(args)
  if args[1] ~= nil then
    depth = tonumber(args[1])
  end
  local batch = {}
  for i = 1, depth do
    batch[i] = wrk.format(nil)
  end
  req = table.concat(batch)
end

function request()
  return req
end
