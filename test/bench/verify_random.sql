\set id random(1, :nkeys)
SELECT valid FROM apikeys.apikey_verify((SELECT k FROM bench_keys WHERE id = :id));
