SELECT key_id FROM apikeys.apikey_create('bench', 'pgbench');
