--
-- security_audit_review: ATTACKS from the review of per-tenant chains, each
-- of which got through before its fix:
--   1. a superuser deletes minutes-old rows of a chain and appends a
--      forged audit_purged anchor naming the last deleted row: audit_check()
--      says ok, and the head kept outside the database (audit_head()) still
--      matches, yet audit_purge() never deletes rows under a day old;
--   2. a new tenant's auditor, on a reused tenant id, has audit_check()
--      walk (and count, and fail on) the previous owner's rows, which
--      audit_log and audit_log_page rightly hide;
--   3. a superuser replaces apikeys_internal._changed() in place (same OID): the
--      trigger guard still counts the triggers as firing, so a revoke by
--      UPDATE never retires the cached policy and the key stays valid;
--   4. as 1, but the anchor records the whole deleted row and is dated a
--      day after it, so the day rule holds: audit_check() said ok (the
--      anchor is now refused while it is dated after the check, and for
--      ever once a row dated before it follows it);
--   5. any role hashes a guessed tenant name as the audit chain's lock tag
--      does and finds that lock in pg_locks (which shows every session's
--      locks to everyone): the tenant exists and is being changed now;
--   6. a purge anchor without a cutoff: its day rule compared NULLs, which
--      did not fail, and seconds-old rows were hidden behind it.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');
CREATE ROLE regress_review_auditor;
SELECT apikeys.grant_tenant('regress_review_auditor', 'acme', 'audit');
SELECT count(*) FROM apikeys.apikey_create_many('acme', ARRAY['a', 'b', 'c']);

-- 1. forged anchor: rows 1..4 are seconds old
CREATE TEMP TABLE kept_head AS SELECT * FROM apikeys.audit_head() WHERE chain = 'acme';
DO $$
DECLARE
    x apikeys.audit;
BEGIN
    SELECT * INTO x FROM apikeys.audit WHERE chain = 'acme' AND audit_id = 4;
    ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
    DELETE FROM apikeys.audit WHERE chain = 'acme' AND audit_id <= 4;
    ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
    PERFORM apikeys_internal._audit_write('audit_purged', 'acme', NULL, jsonb_build_object(
        'rows', 4, 'older_than', interval '90 days', 'cutoff', now() - interval '90 days',
        'last_purged_id', 4, 'last_purged_hash', encode(x.row_hash, 'hex')));
END $$;
SELECT h.row_hash = encode(a.row_hash, 'hex') AS kept_head_still_matches
  FROM kept_head h JOIN apikeys.audit a ON a.chain = h.chain AND a.audit_id = h.audit_id;
SELECT min(at) > now() - interval '1 hour' AS every_remaining_row_is_recent
  FROM apikeys.audit WHERE chain = 'acme';
-- wanted: the check refuses an anchor that removed rows under a day old
SELECT ok AS forged_anchor_accepted FROM apikeys.audit_check();

-- 2. a reused tenant id
SELECT tenant FROM apikeys.tenant_create('reuse');
SELECT count(*) FROM apikeys.apikey_create_many('reuse', ARRAY['old-owner-project']);
SELECT apikeys.tenant_delete('reuse', true);
SELECT tenant FROM apikeys.tenant_create('reuse');
CREATE ROLE regress_review_new_auditor;
SELECT apikeys.grant_tenant('regress_review_new_auditor', 'reuse', 'audit');
-- the previous owner's first row altered (by a superuser, long ago)
ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
UPDATE apikeys.audit SET detail = '{}' WHERE chain = 'reuse' AND audit_id = 2;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
SET ROLE regress_review_new_auditor;
SELECT count(*) AS rows_visible FROM apikeys.audit_log;
-- wanted: the check covers the rows the auditor may read, and nothing else
SELECT ok, rows_checked, first_bad_id FROM apikeys.audit_check();
RESET ROLE;

-- 3. apikeys_internal._changed() replaced in place
CREATE TABLE public.ck AS SELECT c.key_id, c.api_key FROM apikeys.apikey_create('acme', 'cached') c;
SELECT (apikeys.apikey_verify(api_key)).code FROM public.ck;
SELECT (apikeys.apikey_verify(api_key)).code FROM public.ck;
CREATE OR REPLACE FUNCTION apikeys_internal._changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
UPDATE apikeys.credential SET status = 'revoked', revoked_at = now()
 WHERE key_id = (SELECT key_id FROM public.ck);
CREATE OR REPLACE FUNCTION apikeys_internal._changed() RETURNS trigger LANGUAGE C AS '$libdir/apikeys', 'apikeys_changed';
\c
-- wanted: not 'valid' (the row says revoked)
SELECT (apikeys.apikey_verify(k.api_key)).code,
       (SELECT c.status FROM apikeys.credential c WHERE c.key_id = k.key_id)
  FROM public.ck k;

-- 4. a purge anchor dated a day after the seconds-old row it "purged"
SELECT tenant FROM apikeys.tenant_create('forge');
CREATE ROLE regress_review_forge_auditor;
SELECT apikeys.grant_tenant('regress_review_forge_auditor', 'forge', 'audit');
SELECT count(*) FROM apikeys.apikey_create_many('forge', ARRAY['a', 'b']);
CREATE FUNCTION pg_temp.forge_anchor(anchor_at interval) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    x apikeys.audit;
    n bigint;
BEGIN
    -- the newest row but one is "purged"; the newest stays
    SELECT * INTO x FROM apikeys.audit WHERE chain = 'forge' ORDER BY audit_id DESC OFFSET 1 LIMIT 1;
    ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
    DELETE FROM apikeys.audit WHERE chain = 'forge' AND audit_id <= x.audit_id;
    PERFORM apikeys_internal._audit_write('audit_purged', 'forge', NULL, jsonb_build_object(
        'rows', x.audit_id, 'older_than', interval '1 day', 'cutoff', x.at + interval '1 microsecond',
        'last_purged_id', x.audit_id, 'last_purged_hash', encode(x.row_hash, 'hex'),
        'last_purged_row', to_jsonb(x)));
    SELECT max(audit_id) INTO n FROM apikeys.audit WHERE chain = 'forge';
    UPDATE apikeys.audit SET at = x.at + anchor_at WHERE chain = 'forge' AND audit_id = n;
    UPDATE apikeys.audit a SET row_hash = apikeys_internal._audit_hash(a) WHERE chain = 'forge' AND audit_id = n;
    ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
    RETURN n;
END $$;
SELECT pg_temp.forge_anchor(interval '1 day 1 second') AS anchor_id \gset
SET ROLE regress_review_forge_auditor;
-- wanted: not ok, the anchor named
SELECT ok, first_bad_chain, first_bad_id = :anchor_id AS at_anchor, problem FROM apikeys.audit_check();
RESET ROLE;
-- the same anchor dated a minute ago (the day rule now fails) and a row after
-- it dated an hour ago: refused for its date first
SELECT count(*) FROM apikeys.apikey_create_many('forge', ARRAY['c']);
ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
UPDATE apikeys.audit SET at = now() - interval '1 minute' WHERE chain = 'forge' AND audit_id = :anchor_id;
UPDATE apikeys.audit SET at = now() - interval '1 hour' WHERE chain = 'forge' AND audit_id > :anchor_id;
UPDATE apikeys.audit a SET row_hash = apikeys_internal._audit_hash(a) WHERE chain = 'forge';
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
SET ROLE regress_review_forge_auditor;
SELECT ok, problem FROM apikeys.audit_check();
RESET ROLE;

-- the day after such an anchor's date it passed, when the row that follows
-- it is forged with the same date: a real row after that, dated before the
-- anchor (written during that day), went unnoticed (only the next row was
-- compared).  Played in the past: an anchor 2 minutes old, the forged row
-- at its date, a real change an hour older than both.
SELECT tenant FROM apikeys.tenant_create('forge2');
CREATE ROLE regress_review_forge2_auditor;
SELECT apikeys.grant_tenant('regress_review_forge2_auditor', 'forge2', 'audit');
SELECT count(*) FROM apikeys.apikey_create_many('forge2', ARRAY['a']);
CREATE FUNCTION pg_temp.relink(ch text, from_id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r apikeys.audit;
    prev bytea;
BEGIN
    FOR r IN SELECT * FROM apikeys.audit WHERE chain = ch AND audit_id >= from_id ORDER BY audit_id LOOP
        IF prev IS NOT NULL THEN
            UPDATE apikeys.audit SET prev_hash = prev WHERE chain = ch AND audit_id = r.audit_id;
        END IF;
        UPDATE apikeys.audit a SET row_hash = apikeys_internal._audit_hash(a)
         WHERE chain = ch AND audit_id = r.audit_id RETURNING row_hash INTO prev;
    END LOOP;
END $$;
ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
UPDATE apikeys.audit SET at = now() - interval '3 days' WHERE chain = 'forge2';
SELECT pg_temp.relink('forge2', 1);
SELECT max(audit_id) AS f2_purged FROM apikeys.audit WHERE chain = 'forge2' \gset
SELECT apikeys_internal._audit_write('audit_purged', 'forge2', NULL, jsonb_build_object(
    'rows', x.audit_id, 'older_than', interval '1 day', 'cutoff', x.at + interval '1 microsecond',
    'last_purged_id', x.audit_id, 'last_purged_hash', encode(x.row_hash, 'hex'),
    'last_purged_row', to_jsonb(x)))
  FROM apikeys.audit x WHERE chain = 'forge2' AND audit_id = :f2_purged;
SELECT apikeys_internal._audit_write('key_updated', 'forge2', NULL, '{"forged": true}');
DELETE FROM apikeys.audit WHERE chain = 'forge2' AND audit_id <= :f2_purged;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
SELECT count(*) FROM apikeys.apikey_create_many('forge2', ARRAY['real']);
ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
UPDATE apikeys.audit SET at = now() - interval '2 minutes'
 WHERE chain = 'forge2' AND audit_id IN (:f2_purged + 1, :f2_purged + 2);
UPDATE apikeys.audit SET at = now() - interval '1 hour' WHERE chain = 'forge2' AND audit_id > :f2_purged + 2;
SELECT pg_temp.relink('forge2', :f2_purged + 1);
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
SET ROLE regress_review_forge2_auditor;
-- wanted: not ok, the anchor named
SELECT ok, first_bad_id = :f2_purged + 1 AS at_anchor, problem FROM apikeys.audit_check();
RESET ROLE;

-- 5. the chain lock of a guessed tenant name, looked for in pg_locks
BEGIN;
SELECT count(*) FROM apikeys.apikey_create_many('acme', ARRAY['locked']);
SELECT count(*) AS chain_locks_held
  FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 16725 AND pid = pg_backend_pid();
-- wanted: 0 (the tag is salted with bytes drawn at server start)
SELECT count(*) AS found_by_tenant_name
  FROM pg_locks l,
       (SELECT digest(convert_to('apikeys.audit.chain', 'UTF8') || '\x00'::bytea || convert_to('acme', 'UTF8'), 'sha256') AS d) h
 WHERE l.locktype = 'advisory' AND l.objsubid = 16725
   AND l.classid::bigint = ((get_byte(h.d, 0)::bigint << 24) | (get_byte(h.d, 1) << 16) | (get_byte(h.d, 2) << 8) | get_byte(h.d, 3))
   AND l.objid::bigint = ((get_byte(h.d, 4)::bigint << 24) | (get_byte(h.d, 5) << 16) | (get_byte(h.d, 6) << 8) | get_byte(h.d, 7));
ROLLBACK;

-- 6. an anchor with no cutoff, for rows seconds old
SELECT tenant FROM apikeys.tenant_create('nocut');
CREATE ROLE regress_review_nocut_auditor;
SELECT apikeys.grant_tenant('regress_review_nocut_auditor', 'nocut', 'audit');
SELECT count(*) FROM apikeys.apikey_create_many('nocut', ARRAY['young']);
SELECT max(audit_id) AS nocut_last FROM apikeys.audit WHERE chain = 'nocut' \gset
SELECT apikeys_internal._audit_write('audit_purged', 'nocut', NULL, jsonb_build_object(
    'rows', a.audit_id, 'last_purged_id', a.audit_id, 'last_purged_hash', encode(a.row_hash, 'hex'),
    'last_purged_row', to_jsonb(a)))
  FROM apikeys.audit a WHERE chain = 'nocut' AND audit_id = :nocut_last;
ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
DELETE FROM apikeys.audit WHERE chain = 'nocut' AND audit_id <= :nocut_last;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
SET ROLE regress_review_nocut_auditor;
-- wanted: not ok, at the anchor
SELECT ok, first_bad_id = :nocut_last + 1 AS at_anchor, problem FROM apikeys.audit_check();
RESET ROLE;

-- 7. PREPARE TRANSACTION of an audited change that is not a key change
-- (a format registration, a tenant's scope registry): the prepared
-- transaction kept its chain and shape locks past a restart, where the new
-- salt gave them other tags and they ordered nothing.  Refused now.
BEGIN;
SELECT (apikeys.key_format_register('nocut', 'prep', 'prp_', 40, 'hex')).name AS registered;
PREPARE TRANSACTION 'apikeys_review_format';
BEGIN;
SELECT (apikeys.scope_define('nocut', 'read:prep')).tenant AS scope_defined;
PREPARE TRANSACTION 'apikeys_review_scope';
\set VERBOSITY sqlstate
BEGIN;
SELECT (apikeys.scope_define('nocut', 'read:prep2')).tenant AS scope_defined;
PREPARE TRANSACTION 'apikeys_review_scope2';
\set VERBOSITY default
-- a transaction that took none of those locks still reaches PREPARE (and
-- here its own refusal: max_prepared_transactions = 0)
BEGIN;
SELECT count(*) >= 0 AS read_only FROM apikeys.key_format;
\set VERBOSITY terse
PREPARE TRANSACTION 'apikeys_review_plain';
\set VERBOSITY default

-- 8. a format registered in a REPEATABLE READ snapshot older than another
-- tenant's registration of the same shape (the overlap check read the old
-- snapshot; test/isolation/specs/format_register_nowait.spec plays the race)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT (apikeys.key_format_register('nocut', 'rr', 'rrr_', 40, 'hex')).name AS registered;
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT (apikeys.key_format_register('nocut', 'ser', 'sss_', 40, 'hex')).name AS registered;
ROLLBACK;

-- 9. an index named audit_pkey that is not the primary key: the chain's
-- head was read through whatever index had that name (a text key compared
-- with bigint entries: the server crashed).  The table's own primary key is
-- used now, whatever its name.
ALTER INDEX apikeys.audit_pkey RENAME TO audit_pkey_moved;
CREATE INDEX audit_pkey ON apikeys.audit (audit_id);
SELECT count(*) FROM apikeys.apikey_create_many('nocut', ARRAY['after the swap', 'and after']);
-- the new rows follow the chain's head
SELECT count(*) AS linked FROM apikeys.audit a JOIN apikeys.audit b
    ON b.chain = a.chain AND b.audit_id = a.audit_id - 1 AND a.prev_hash = b.row_hash
 WHERE a.chain = 'nocut' AND a.audit_id > (SELECT max(audit_id) - 2 FROM apikeys.audit WHERE chain = 'nocut');
DROP INDEX apikeys.audit_pkey;
ALTER INDEX apikeys.audit_pkey_moved RENAME TO audit_pkey;

-- 10. the end of a chain deleted, head included, behind a forged anchor
-- for a made-up row (old, hashed by the forger): nothing follows it, so
-- audit_check() passes at once.  The head the auditor stored outside the
-- database finds it: audit_head_check() says no purge accounts for it.
SELECT tenant FROM apikeys.tenant_create('tail');
CREATE ROLE regress_review_tail_auditor;
SELECT apikeys.grant_tenant('regress_review_tail_auditor', 'tail', 'audit');
SELECT count(*) FROM apikeys.apikey_create_many('tail', ARRAY['a', 'b']);
SET ROLE regress_review_tail_auditor;
SELECT chain, audit_id AS t_id, row_hash AS t_hash, at AS t_at FROM apikeys.audit_head() \gset
RESET ROLE;
CREATE FUNCTION pg_temp.wipe_tail() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p apikeys.audit;
    n bigint;
BEGIN
    SELECT * INTO p FROM apikeys.audit WHERE chain = 'tail' ORDER BY audit_id DESC LIMIT 1;
    p.at := now() - interval '3 days';
    p.row_hash := apikeys_internal._audit_hash(p);
    ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
    DELETE FROM apikeys.audit WHERE chain = 'tail';
    PERFORM apikeys_internal._audit_write('audit_purged', 'tail', NULL, jsonb_build_object(
        'rows', p.audit_id, 'older_than', interval '1 day', 'cutoff', now() - interval '2 days',
        'last_purged_id', p.audit_id, 'last_purged_hash', encode(p.row_hash, 'hex'),
        'last_purged_row', to_jsonb(p)));
    SELECT max(audit_id) INTO n FROM apikeys.audit WHERE chain = 'tail';
    UPDATE apikeys.audit SET audit_id = p.audit_id + 1, prev_hash = p.row_hash WHERE chain = 'tail' AND audit_id = n;
    UPDATE apikeys.audit a SET row_hash = apikeys_internal._audit_hash(a) WHERE chain = 'tail';
    ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
END $$;
SELECT pg_temp.wipe_tail();
SET ROLE regress_review_tail_auditor;
-- the forgery checks
SELECT ok, problem FROM apikeys.audit_check();
-- wanted: not ok, no purge accounts for the stored head
SELECT ok, problem FROM apikeys.audit_head_check(:'chain', :t_id, :'t_hash', :'t_at');
-- another tenant's chain is not the auditor's to check
SELECT * FROM apikeys.audit_head_check('forge', 1, 'x', now());
\set VERBOSITY sqlstate
SELECT * FROM apikeys.audit_head_check('forge', 1, 'x', now());
\set VERBOSITY default
RESET ROLE;

-- 11. a superuser changes the type of a column the chain trigger forms or
-- reads (row_hash to bigint): the head was read as a bytea pointer (the
-- server crashed).  Refused as extension_damaged now, as is (12.) a
-- primary key on chain under another collation, which orders the chains
-- otherwise (the head of one could be missed), and (13.) a NULL row_hash,
-- which links as a wrong hash rather than crash.
CREATE PROCEDURE pg_temp.drop_audit_views() LANGUAGE plpgsql AS $$
BEGIN
    ALTER EXTENSION apikeys DROP VIEW apikeys.audit_log;
    DROP VIEW apikeys.audit_log CASCADE;
END $$;
BEGIN;
CALL pg_temp.drop_audit_views();
ALTER TABLE apikeys.audit ALTER COLUMN row_hash TYPE bigint USING 0;
SELECT count(*) FROM apikeys.apikey_create('nocut', 'typed');
ROLLBACK;
BEGIN;
CALL pg_temp.drop_audit_views();
ALTER TABLE apikeys.audit ALTER COLUMN row_hash TYPE bigint USING 0;
\set VERBOSITY sqlstate
SELECT count(*) FROM apikeys.apikey_create('nocut', 'typed');
\set VERBOSITY default
ROLLBACK;
BEGIN;
ALTER TABLE apikeys.audit DROP CONSTRAINT audit_pkey;
ALTER TABLE apikeys.audit ADD PRIMARY KEY (chain, audit_id);
SELECT count(*) FROM apikeys.apikey_create('nocut', 'same collation');
ROLLBACK;
BEGIN;
CALL pg_temp.drop_audit_views();
ALTER TABLE apikeys.audit DROP CONSTRAINT audit_pkey;
ALTER TABLE apikeys.audit ALTER COLUMN chain TYPE text COLLATE "POSIX";
ALTER TABLE apikeys.audit ADD PRIMARY KEY (chain, audit_id);
SELECT count(*) FROM apikeys.apikey_create('nocut', 'collated');
ROLLBACK;
BEGIN;
ALTER TABLE apikeys.audit DISABLE TRIGGER audit_append_only;
ALTER TABLE apikeys.audit ALTER COLUMN row_hash DROP NOT NULL;
UPDATE apikeys.audit SET row_hash = NULL
 WHERE chain = 'nocut' AND audit_id = (SELECT max(audit_id) FROM apikeys.audit WHERE chain = 'nocut');
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
SELECT count(*) FROM apikeys.apikey_create('nocut', 'after a null');
-- the new row links to no hash: the chain is broken there
SELECT audit_id, prev_hash = decode(repeat('00', 32), 'hex') AS linked_to_nothing FROM apikeys.audit
 WHERE chain = 'nocut' ORDER BY audit_id DESC LIMIT 1;
ROLLBACK;

-- 14. a trigger on apikeys.audit rotates another key while the rows of a
-- two-secret INSERT are written: the rotated secret's key was looked up in
-- the INSERT's table of key tenants (kept for the backend), not found, and
-- the usable new secret got no secret_issued row.
SELECT key_id AS host FROM apikeys.apikey_create('nocut', 'host') \gset
CREATE TABLE public.victim AS SELECT key_id FROM apikeys.apikey_create('nocut', 'victim');
CREATE FUNCTION public.rotate_on_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.action = 'secret_issued' AND NEW.detail -> 'new' ->> 'hint' = 'byhand1' THEN
        PERFORM apikeys.apikey_rotate(v.key_id, '1 day') FROM public.victim v;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_rotate_on_audit AFTER INSERT ON apikeys.audit FOR EACH ROW EXECUTE FUNCTION public.rotate_on_audit();
INSERT INTO apikeys.secret (digest, key_id, hint, valid_until)
SELECT sha256(convert_to('by hand ' || g, 'UTF8')), :'host', 'byhand' || g, now() + interval '1 day'
  FROM generate_series(1, 2) g;
DROP TRIGGER zz_rotate_on_audit ON apikeys.audit;
-- every secret of the rotated key has its row
SELECT s.valid_until IS NULL AS current,
       (SELECT count(*) FROM apikeys.audit a WHERE a.key_id = s.key_id
           AND (a.detail -> 'new' ->> 'hint' = s.hint OR a.detail -> 'secret' ->> 'hint' = s.hint)) AS rows
  FROM apikeys.secret s JOIN public.victim v USING (key_id) ORDER BY s.created_at, s.valid_until NULLS LAST;
DROP FUNCTION public.rotate_on_audit();
DROP TABLE public.victim;

DROP TABLE public.ck;
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
DROP OWNED BY regress_review_auditor, regress_review_new_auditor, regress_review_forge_auditor,
    regress_review_nocut_auditor, regress_review_forge2_auditor, regress_review_tail_auditor;
DROP ROLE regress_review_auditor;
DROP ROLE regress_review_new_auditor;
DROP ROLE regress_review_forge_auditor;
DROP ROLE regress_review_nocut_auditor;
DROP ROLE regress_review_forge2_auditor;
DROP ROLE regress_review_tail_auditor;
