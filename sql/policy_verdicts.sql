--
-- policy_verdicts: the C list of verdicts (src/verdicts.h, exposed as
-- apikeys_internal.verdicts()) and the SQL that depends on it agree.  Each
-- query below returns no rows when they do; a verdict added on one side only
-- shows up here.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;

-- the list itself: codes 0.. in order, names unique
SELECT code, name, counted, http_status FROM apikeys_internal.verdicts() ORDER BY code;
SELECT count(*) = max(code) + 1 AND count(DISTINCT name) = count(*) AS dense_and_unique
  FROM apikeys_internal.verdicts();

-- apikeys.usage: a count_<name> column per counted verdict, in list order,
-- between period_start and flushed_at (the flush worker writes them so)
WITH cols AS (
    SELECT a.attname::text AS col, row_number() OVER (ORDER BY a.attnum) AS pos
      FROM pg_attribute a
     WHERE a.attrelid = 'apikeys.usage'::regclass AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname LIKE 'count\_%'),
list AS (
    SELECT 'count_' || d.name AS col, row_number() OVER (ORDER BY d.code) AS pos
      FROM apikeys_internal.verdicts() d WHERE d.counted)
SELECT coalesce(c.col, '(missing)') AS usage_column, coalesce(l.col, '(not in the C list)') AS c_list
  FROM cols c FULL JOIN list l USING (pos)
 WHERE c.col IS DISTINCT FROM l.col;
SELECT (SELECT min(attnum) FROM pg_attribute WHERE attrelid = 'apikeys.usage'::regclass
           AND attname LIKE 'count\_%') = 5 AS counts_start_at_5,
       (SELECT attnum FROM pg_attribute WHERE attrelid = 'apikeys.usage'::regclass
           AND attname = 'flushed_at') = 5 + (SELECT count(*) FROM apikeys_internal.verdicts() WHERE counted)
       AS flushed_at_follows;

-- apikeys.key_usage: a column per counted verdict, in list order, after
-- usage_remaining
WITH cols AS (
    SELECT a.attname::text AS col, a.attnum - (SELECT attnum FROM pg_attribute
                                                 WHERE attrelid = 'apikeys.key_usage'::regclass
                                                   AND attname = 'usage_remaining') AS pos
      FROM pg_attribute a
     WHERE a.attrelid = 'apikeys.key_usage'::regclass AND a.attnum > 0),
list AS (
    SELECT d.name AS col, row_number() OVER (ORDER BY d.code) AS pos
      FROM apikeys_internal.verdicts() d WHERE d.counted)
SELECT c.col AS key_usage_column, l.col AS c_list
  FROM list l LEFT JOIN cols c USING (pos)
 WHERE c.col IS DISTINCT FROM l.col;

-- apikeys.verifications: one row per verdict
SELECT coalesce(v.outcome, '(missing)') AS outcome, coalesce(d.name, '(not in the C list)') AS c_list
  FROM apikeys.verifications v FULL JOIN apikeys_internal.verdicts() d ON d.name = v.outcome
 WHERE v.outcome IS NULL OR d.name IS NULL;

-- the PostgREST gate: its status comes from the list; every refusal has its
-- own message (a WHEN branch), and no branch names a verdict the list lacks
SELECT d.name AS verdict_without_message
  FROM apikeys_internal.verdicts() d
 WHERE d.name <> 'valid'
   AND position(format('WHEN %L THEN', d.name) IN
                (SELECT prosrc FROM pg_proc WHERE oid = 'apikeys.postgrest_gate'::regproc)) = 0;
SELECT m[1] AS message_for_unknown_verdict
  FROM regexp_matches((SELECT prosrc FROM pg_proc WHERE oid = 'apikeys.postgrest_gate'::regproc),
                      'CASE v\.code(.*?)END CASE', 's') body,
       regexp_matches(body[1], 'WHEN ''([a-z_]+)'' THEN', 'g') m
 WHERE m[1] NOT IN (SELECT name FROM apikeys_internal.verdicts());
SELECT count(*) > 0 AS gate_reads_the_list
  FROM regexp_matches((SELECT prosrc FROM pg_proc WHERE oid = 'apikeys.postgrest_gate'::regproc),
                      'http_status FROM apikeys_internal\.verdicts\(\)');
SELECT count(*) AS gate_literal_statuses_left
  FROM regexp_matches((SELECT prosrc FROM pg_proc WHERE oid = 'apikeys.postgrest_gate'::regproc),
                      'CASE v\.code(.*?)END CASE', 's') body,
       regexp_matches(body[1], 'status := ', 'g');

-- key_usage reads _pending_usage's counts by the list's codes: make each
-- counted verdict of one key happen a different number of times (its code
-- + 1) and read them back before any flush
SELECT tenant FROM apikeys.tenant_create('acme');
SELECT key_id AS k, api_key AS key FROM apikeys.apikey_create('acme', 'counted', '{read}') \gset
-- a usage cap: its counts are written at every flush turn, not within
-- apikeys.usage_write_delay
SELECT apikeys.apikey_set_policy(:'k', usage_limit => 1000000);
-- valid (code 0) once, insufficient_scope (code 8) 9 times
SELECT count(*) FROM apikeys.apikey_verify(:'key');
SELECT count(apikeys.apikey_verify(:'key', '{write}')) FROM generate_series(1, 9);
SELECT valid, insufficient_scope, disabled FROM apikeys.key_usage WHERE key_id = :'k';

-- the flush worker writes every counted column (its statement is built from
-- the list): wait until the counts are in apikeys.usage
CREATE FUNCTION pg_temp.wait_flushed(k uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1200 LOOP
        IF EXISTS (SELECT 1 FROM apikeys.key_usage u WHERE u.key_id = k AND NOT u.has_unflushed) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END $$;
SELECT pg_temp.wait_flushed(:'k');
SELECT count_valid, count_insufficient_scope, count_disabled FROM apikeys.usage WHERE key_id = :'k';
SELECT flush_errors FROM apikeys.runtime;
