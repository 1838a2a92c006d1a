-- The load script for wrk (Debian's wrk 4.1), written by bench/run.py's scenario files:
--   wrk -t T -c C -d Ds -s bench/wrk.lua http://127.0.0.1:PORT -- SCENARIO_FILE KEY_PREFIX T
-- A scenario file has one item a line, fields separated by tabs:
--   E <status>                the status every answer must have (anything else is counted and fails the run)
--   H <name> <value>          a header sent with every request
--   C <cookie> <csrf token>   a signed-in session; requests take them in turn
--   R <method> <path> <body>  a request; requests are taken in turn, each thread from its own offset.
--                             "@KEY@" in the body becomes a key used once (a fresh idempotency key)
-- At the end one line "BENCH_RESULT {json}" with the counts and the latency percentiles (microseconds).

local items = {}
local creds = {}
local fixed_headers = {}
local expected = 200
local counter = 0
local cred_turn = 0
local key_prefix = ""

-- per thread, read back by done()
unexpected = 0
statuses = ""
bytes = 0
answers = 0

local threads = {}

local function split(line)
  local fields, start = {}, 1
  while true do
    local at = string.find(line, "\t", start, true)
    if not at then
      fields[#fields + 1] = string.sub(line, start)
      return fields
    end
    fields[#fields + 1] = string.sub(line, start, at - 1)
    start = at + 1
  end
end

function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  local path, prefix, thread_count = args[1], args[2], tonumber(args[3]) or 1
  key_prefix = prefix .. "t" .. id .. "n"
  for line in io.lines(path) do
    local f = split(line)
    if f[1] == "E" then
      expected = tonumber(f[2])
    elseif f[1] == "H" then
      fixed_headers[f[2]] = f[3]
    elseif f[1] == "C" then
      creds[#creds + 1] = { f[2], f[3] or "" }
    elseif f[1] == "R" then
      items[#items + 1] = { f[2], f[3], f[4] or "" }
    end
  end
  if #items == 0 then
    error("no requests in " .. path)
  end
  counter = math.floor(#items * id / thread_count)
  cred_turn = id
end

function request()
  counter = counter + 1
  local item = items[(counter % #items) + 1]
  local headers = {}
  for name, value in pairs(fixed_headers) do
    headers[name] = value
  end
  if #creds > 0 then
    cred_turn = cred_turn + 1
    local cred = creds[(cred_turn % #creds) + 1]
    headers["Cookie"] = cred[1]
    if cred[2] ~= "" then
      headers["X-CSRFToken"] = cred[2]
    end
  end
  local body = nil
  if item[3] ~= "" then
    body = (string.gsub(item[3], "@KEY@", key_prefix .. counter))
    headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  return wrk.format(item[1], item[2], headers, body)
end

function response(status, headers, body)
  answers = answers + 1
  if body then
    bytes = bytes + #body
  end
  if status ~= expected then
    unexpected = unexpected + 1
    if #statuses < 120 then
      statuses = statuses .. status .. " "
    end
  end
end

function done(summary, latency, requests)
  local total_unexpected, total_bytes, total_answers, seen = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    total_unexpected = total_unexpected + (thread:get("unexpected") or 0)
    total_bytes = total_bytes + (thread:get("bytes") or 0)
    total_answers = total_answers + (thread:get("answers") or 0)
    seen = seen .. (thread:get("statuses") or "")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}, "unexpected": %d, "unexpected_statuses": "%s", "bytes": %d, "answers": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    total_unexpected, seen, total_bytes, total_answers))
end
