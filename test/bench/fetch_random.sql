\set id random(1, :nkeys)
SELECT (SELECT k FROM bench_keys WHERE id = :id) IS NOT NULL;
