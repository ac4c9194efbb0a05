-- wrk script for bench/sdk.py's `set` endpoint: GET PATH?i=N with N cycling through 0..999, so
-- each request overwrites one of 1000 keys ("key-0" .. "key-999"). Why not a new key per
-- request: the app would reach PICLOUD_KV_KEYS_MAX (10000) within seconds and every further
-- set would fail. Why not one fixed key: on PostgreSQL every update of the same row adds a dead
-- version to one HOT chain, which measures PostgreSQL's row churn more than the SDK call.
-- With -t1 there is one Lua state, so the counter is shared by all connections.
local i = 0
local path = nil

request = function()
  if path == nil then
    path = wrk.path
  end
  i = (i + 1) % 1000
  return wrk.format("GET", path .. "?i=" .. i)
end
