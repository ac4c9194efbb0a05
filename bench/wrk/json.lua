-- wrk script for the `json` workload: POST a 196-byte JSON object to the URL given to wrk.
-- Every server answers {"name":"picloud-bench-json","sum":210,"count":20}.
-- Keep the body in sync with JSON_BODY in bench/benchlib.py (used to check the answer first).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name":"picloud-bench-json","values":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],"tags":["alpha","beta","gamma","delta","epsilon","zeta","eta","theta","iota","kappa","lambda"],"ok":true}'
