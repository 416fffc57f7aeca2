SELECT valid FROM apikeys.apikey_verify('ak_this-is-not-a-key');
