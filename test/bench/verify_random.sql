\set id random(1, :nkeys)
SELECT (apikeys.apikey_verify((SELECT k FROM bench_keys WHERE id = :id))).valid;
