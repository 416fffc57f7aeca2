\set id random(1, 1000)
SELECT key_id FROM apikeys.apikey_rotate((SELECT key_id FROM bench_rotate WHERE id = :id));
