--
-- policy_verify_once: one call of apikey_verify in one row of a statement
-- verifies, counts and charges once, however PostgreSQL expands it:
-- (f(k)).* evaluates f(k) once per column and (f(k)).a, (f(k)).b twice, but
-- within one row they are the same call (src/verify.c, verify_memo).  Every
-- row, statement, PL/pgSQL statement and rescan is a call of its own, so no
-- form gets more verdicts than charges.  Charges are read as `used` of a key
-- with a usage cap (no window edges), verifications as key_usage.valid.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT key_id AS k, api_key AS key FROM apikeys.apikey_create('acme', 'once', '{read}') \gset
SELECT apikeys.apikey_set_policy(:'k', usage_limit => 1000000);

-- charges(sql): how many uses running sql charged, and how many valid
-- verifications it counted (each must equal the calls intended)
CREATE FUNCTION pg_temp.charges(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    u0 bigint; u1 bigint; v0 bigint; v1 bigint;
BEGIN
    SELECT used, valid INTO u0, v0 FROM apikeys.key_usage;
    EXECUTE sql;
    SELECT used, valid INTO u1, v1 FROM apikeys.key_usage;
    RETURN format('charged %s, counted %s', u1 - u0, v1 - v0);
END $$;
-- the api key, for the statements below (psql variables do not reach EXECUTE)
CREATE TABLE pg_temp.k AS SELECT :'key'::text AS key;

-- merged: one row's expansion of one call
SELECT pg_temp.charges($$SELECT (apikeys.apikey_verify(key)).* FROM k$$) AS star;
SELECT pg_temp.charges($$SELECT (apikeys.apikey_verify(key)).valid, (apikeys.apikey_verify(key)).code FROM k$$) AS two_fields;
SELECT pg_temp.charges($$SELECT (v).valid, (v).code, (v).tenant FROM (SELECT apikeys.apikey_verify(key) v FROM k OFFSET 0) s$$) AS subquery_fields;
SELECT pg_temp.charges($$SELECT (apikeys.authenticate(key)).* FROM k$$) AS authenticate_star;
SELECT pg_temp.charges($$SELECT (apikeys.apikey_verify(key)).* FROM k WHERE (apikeys.apikey_verify(key)).valid$$) AS where_and_select;
-- the same call twice in one row is that row's one verification
SELECT pg_temp.charges($$SELECT apikeys.apikey_verify(key), apikeys.apikey_verify(key) FROM k$$) AS same_call_twice;
-- the documented form: one call
SELECT pg_temp.charges($$SELECT * FROM k, apikeys.apikey_verify(key)$$) AS from_clause;

-- not merged: different arguments are different calls
SELECT pg_temp.charges($$SELECT (apikeys.apikey_verify(key)).valid, (apikeys.apikey_verify(key, '{read}')).valid FROM k$$) AS other_arguments;

-- not merged: every row is a call
SELECT pg_temp.charges($$SELECT apikeys.apikey_verify(key) FROM k, generate_series(1, 100)$$) AS hundred_rows;
SELECT pg_temp.charges($$SELECT (apikeys.apikey_verify(key)).* FROM k, generate_series(1, 100)$$) AS hundred_rows_star;
SELECT pg_temp.charges($$SELECT count(*) FILTER (WHERE (apikeys.apikey_verify(key)).valid) FROM k, generate_series(1, 50)$$) AS aggregate_rows;
SELECT pg_temp.charges($$SELECT g, count(*) FILTER (WHERE (apikeys.apikey_verify(key)).valid) FROM k, generate_series(1, 20) g GROUP BY g$$) AS hash_aggregate_rows;
SELECT pg_temp.charges($$SELECT * FROM (VALUES (apikeys.apikey_verify((SELECT key FROM k))), (apikeys.apikey_verify((SELECT key FROM k)))) x$$) AS values_two_rows;
SELECT pg_temp.charges($$SELECT (apikeys.apikey_verify(key)).valid, generate_series(1, 3) FROM k$$) AS project_set_rows;
-- LATERAL per outer row, with the same arguments every row
SELECT pg_temp.charges($$SELECT v.valid FROM k, generate_series(1, 10) g,
    LATERAL apikeys.apikey_verify(key, NULL, CASE WHEN g > 0 THEN NULL::inet END) v$$) AS lateral_function;
SELECT pg_temp.charges($$SELECT v.valid FROM k, generate_series(1, 10) g,
    LATERAL (SELECT (apikeys.apikey_verify(key, NULL, CASE WHEN g > 0 THEN NULL::inet END)).*) v$$) AS lateral_star;
SELECT pg_temp.charges($$SELECT (SELECT (apikeys.apikey_verify(key, NULL, CASE WHEN g > 0 THEN NULL::inet END)).valid)
    FROM k, generate_series(1, 10) g$$) AS subquery_per_row;
SELECT pg_temp.charges($$WITH v AS (SELECT (apikeys.apikey_verify(key)).* FROM k, generate_series(1, 5))
    SELECT count(*) FROM v$$) AS cte_rows;
SELECT pg_temp.charges($$WITH v AS MATERIALIZED (SELECT (apikeys.apikey_verify(key)).* FROM k)
    SELECT count(*) FROM v a, v b, generate_series(1, 3)$$) AS cte_once_read_thrice;
SELECT pg_temp.charges($$SELECT (apikeys.apikey_verify(key)).valid FROM k UNION ALL
    SELECT (apikeys.apikey_verify(key)).valid FROM k$$) AS union_two_rows;
-- writes: each row its own call, RETURNING too
CREATE TEMP TABLE sink (valid boolean, code text);
SELECT pg_temp.charges($$INSERT INTO sink SELECT (apikeys.apikey_verify(key)).valid, (apikeys.apikey_verify(key)).code
    FROM k, generate_series(1, 10)$$) AS insert_rows;
SELECT pg_temp.charges($$INSERT INTO sink SELECT true FROM generate_series(1, 10)
    RETURNING (apikeys.apikey_verify((SELECT key FROM k))).code$$) AS returning_rows;
SELECT pg_temp.charges($$UPDATE sink SET code = (apikeys.apikey_verify((SELECT key FROM k))).code$$) AS update_rows;
SELECT count(*) FROM sink;

-- PL/pgSQL: every statement is a call, in a loop too
SELECT pg_temp.charges($q$DO $d$
DECLARE v apikeys.verification; key text := (SELECT key FROM k);
BEGIN
    FOR i IN 1..100 LOOP
        v := apikeys.apikey_verify(key);
    END LOOP;
END $d$ $q$) AS plpgsql_assign_loop;
SELECT pg_temp.charges($q$DO $d$
DECLARE n int := 0; key text := (SELECT key FROM k);
BEGIN
    FOR i IN 1..100 LOOP
        IF (apikeys.apikey_verify(key)).valid AND (apikeys.apikey_verify(key)).code = 'valid' THEN
            n := n + 1;
        END IF;
    END LOOP;
END $d$ $q$) AS plpgsql_if_loop;
SELECT pg_temp.charges($q$DO $d$
DECLARE key text := (SELECT key FROM k);
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM (apikeys.apikey_verify(key)).*;
    END LOOP;
END $d$ $q$) AS plpgsql_perform_loop;
SELECT pg_temp.charges($q$DO $d$
DECLARE key text := (SELECT key FROM k); n int := 0;
BEGIN
    WHILE (apikeys.apikey_verify(key)).valid AND n < 100 LOOP
        n := n + 1;
    END LOOP;
END $d$ $q$) AS plpgsql_while_101;
-- a function called per row
CREATE FUNCTION pg_temp.check_key(key text) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    RETURN (apikeys.apikey_verify(key)).valid;
END $f$;
SELECT pg_temp.charges($$SELECT pg_temp.check_key(key) FROM k, generate_series(1, 10)$$) AS plpgsql_function_rows;
CREATE FUNCTION pg_temp.check_sql(key text) RETURNS boolean LANGUAGE sql AS $f$
    SELECT (apikeys.apikey_verify(key)).valid
$f$;
SELECT pg_temp.charges($$SELECT pg_temp.check_sql(key) FROM k, generate_series(1, 10)$$) AS sql_function_rows;

-- statements: each its own call (prepared, repeated, in one transaction)
PREPARE p(text) AS SELECT count(*) FROM (SELECT (apikeys.apikey_verify($1)).*) s;
SELECT used AS used_before FROM apikeys.key_usage \gset
BEGIN;
EXECUTE p(:'key');
EXECUTE p(:'key');
SELECT valid FROM apikeys.apikey_verify(:'key');
SELECT (apikeys.apikey_verify(:'key')).valid;
COMMIT;
SELECT used - :used_before AS four_statements FROM apikeys.key_usage;

-- a verdict read from one row matches the charge: the cap counts down
-- once per row whatever the columns read
SELECT apikeys.apikey_set_policy(:'k', usage_limit => (SELECT used FROM apikeys.key_usage) + 2);
SELECT g, (apikeys.apikey_verify(key)).valid, (apikeys.apikey_verify(key)).code,
       (apikeys.apikey_verify(key)).usage_remaining
  FROM k, generate_series(1, 3) g ORDER BY g;
