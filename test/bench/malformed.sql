SELECT (apikeys.apikey_verify('ak_this-is-not-a-key')).valid;
