\set id random(1, :nkeys)
SELECT bench_handwritten_verify((SELECT k FROM bench_keys WHERE id = :id));
