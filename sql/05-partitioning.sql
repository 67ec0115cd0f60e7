-- =================================================================================================
-- 05-partitioning.sql -- activities partitioned by month, then by hash of tenant
-- =================================================================================================
-- What:   converts the plain activities table of 01 (with its rows, indexes, foreign keys,
--         triggers, policies and grants) into:
--             activities                      PARTITION BY RANGE (created_at)   -- one per UTC month
--               activities_2024_01            PARTITION BY HASH (tenant_id)     -- 4 per month
--                 activities_2024_01_h0 .. activities_2024_01_h3               -- the rows live here
--         and defines lab_ensure_activity_partitions(from, to), which creates the monthly partitions
--         (bonus 1 schedules it) and secures each one (RLS enabled+forced, no direct access).
-- Needs:  01..04 (it carries over whatever they put on activities; it calls lab_secure_partition()
--         from 02). Run as the owner of the tables.
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/05-partitioning.sql "$DSN"
--         or: labhelpers.stages.build(conn, through="05")
-- Idempotent: the conversion runs only while activities is a plain table; partitions are created
--         only when missing. A re-run changes nothing (except adding a month when the calendar moved).
--
-- Design decisions
--   * Range by month on created_at: the activity feed (Test 3) and the lesson's Step 4 / Scenario 3
--     queries filter on created_at, so the planner prunes to the months asked for; old months can
--     be detached or dropped in O(1) instead of DELETEd row by row.
--   * Months are UTC months (bounds like '2024-01-01 00:00:00+00'). A session whose TimeZone is not
--     UTC asking for '2024-01-01'..'2024-02-01' local time touches two partitions, correctly.
--   * Sub-partitioned by HASH (tenant_id), 4 ways: a tenant's rows of a month are in one quarter of
--     the month, and the tenant predicate (the query's own, or the RLS policy's) prunes the other
--     three at executor start. One partition PER tenant would not scale (PITFALLS 21): thousands of
--     tenants x months = planning time and relcache memory; hash keeps the count fixed.
--   * The primary key must contain every partition key (PITFALLS 18): (tenant_id, id, created_at).
--     No table references activities, so no foreign key has to follow it.
--   * Range covered: from January 2024 (the lesson's pruning queries ask for 2024-01) or 24 months
--     ago if earlier, through 6 months ahead. NO DEFAULT partition (PITFALLS 20): a row outside the
--     range fails loudly (SQLSTATE 23514 "no partition of relation ... found for row") instead of
--     piling up in a default partition that would then block creating its month. Monitor headroom:
--         SELECT lab_activity_partitions_ahead();   -- months covered after the current one
--   * Partitions do not inherit RLS (PITFALLS 3): each partition gets RLS enabled+forced with the
--     tenant policy AND its privileges revoked from the app roles, which reach rows via the parent.
-- =================================================================================================

SET client_min_messages = warning;
SET lock_timeout = '10s';


-- -------------------------------------------------------------------------------------------------
-- Section 1: lab_ensure_activity_partitions(from, to) -- create the months in [from, to)
-- -------------------------------------------------------------------------------------------------
-- Creates every missing monthly partition whose month overlaps [p_from, p_to), each with its 4 hash
-- sub-partitions, and secures each new table with lab_secure_partition() (02). Indexes and row
-- triggers of the parent are cloned onto new partitions by PostgreSQL itself.
-- Returns the names of the tables it created (none on a re-run).
CREATE OR REPLACE FUNCTION lab_ensure_activity_partitions(p_from timestamptz, p_to timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    hash_modulus CONSTANT integer := 4;
    month_start  timestamp := date_trunc('month', p_from AT TIME ZONE 'UTC');
    month_name   text;
    leaf_name    text;
    r            integer;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('activities')) IS DISTINCT FROM 'p' THEN
        RAISE EXCEPTION 'activities is not a partitioned table yet: run sql/05-partitioning.sql'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    WHILE month_start < (p_to AT TIME ZONE 'UTC') LOOP
        month_name := 'activities_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(month_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF activities FOR VALUES FROM (%L) TO (%L) PARTITION BY HASH (tenant_id)',
                           month_name,
                           to_char(month_start, 'YYYY-MM-DD HH24:MI:SS') || '+00',
                           to_char(month_start + INTERVAL '1 month', 'YYYY-MM-DD HH24:MI:SS') || '+00');
            PERFORM lab_secure_partition(month_name::regclass);
            RETURN NEXT month_name;
        END IF;
        FOR r IN 0 .. hash_modulus - 1 LOOP
            leaf_name := month_name || '_h' || r;
            IF to_regclass(leaf_name) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
                               leaf_name, month_name, hash_modulus, r);
                PERFORM lab_secure_partition(leaf_name::regclass);
                RETURN NEXT leaf_name;
            END IF;
        END LOOP;
        month_start := month_start + INTERVAL '1 month';
    END LOOP;
END
$$;
COMMENT ON FUNCTION lab_ensure_activity_partitions(timestamptz, timestamptz) IS
    'Create (and secure) the monthly activities partitions, each hash-split 4 ways by tenant, covering [from, to)';
REVOKE ALL ON FUNCTION lab_ensure_activity_partitions(timestamptz, timestamptz) FROM PUBLIC;

-- Monitoring: how many whole months ahead of now are covered (alert when below 2).
CREATE OR REPLACE FUNCTION lab_activity_partitions_ahead() RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(max(12 * substr(c.relname, 12, 4)::integer + substr(c.relname, 17, 2)::integer)
                    - (12 * EXTRACT(year FROM now() AT TIME ZONE 'UTC')::integer
                       + EXTRACT(month FROM now() AT TIME ZONE 'UTC')::integer),
                    -1)
      FROM pg_inherits AS i
      JOIN pg_class AS c ON c.oid = i.inhrelid
     WHERE i.inhparent = to_regclass('activities')
       AND c.relname ~ '^activities_\d{4}_\d{2}$'
$$;
COMMENT ON FUNCTION lab_activity_partitions_ahead() IS
    'Months covered by activities partitions after the current UTC month (-1: none at all)';


-- -------------------------------------------------------------------------------------------------
-- Section 2: convert the plain table -- one transaction (a DO block is atomic), every row kept
-- -------------------------------------------------------------------------------------------------
-- Steps: lock; remember the definitions of the table's indexes, foreign keys, triggers, policies,
-- grants and comment; free the names; rename the old table; create the partitioned one LIKE it
-- (columns, defaults, checks, generated columns, storage, column comments); add the new primary
-- key; create partitions covering every existing row; copy the rows; check the counts; drop the old
-- table; replay the remembered definitions on the new parent (indexes and row triggers cascade to
-- every partition). If anything fails, nothing has changed.
DO $$
DECLARE
    kind       "char";
    recreate   text[] := ARRAY[]::text[];
    stmt       text;
    cols       text;
    n_old      bigint;
    n_new      bigint;
    lo         timestamptz;
    hi         timestamptz;
    rls        boolean;
    rls_forced boolean;
BEGIN
    SELECT c.relkind, c.relrowsecurity, c.relforcerowsecurity INTO kind, rls, rls_forced
      FROM pg_class AS c WHERE c.oid = to_regclass('activities');
    IF kind = 'p' THEN
        RETURN;   -- already partitioned: nothing to do
    ELSIF kind IS DISTINCT FROM 'r' THEN
        RAISE EXCEPTION 'table activities not found: run sql/01-foundation-schema.sql first'
            USING ERRCODE = 'undefined_table';
    END IF;
    LOCK TABLE activities IN ACCESS EXCLUSIVE MODE;

    -- Indexes that do not back a constraint (the primary key is redefined below).
    SELECT recreate || COALESCE(array_agg(pg_get_indexdef(i.indexrelid) ORDER BY i.indexrelid), ARRAY[]::text[])
      INTO recreate
      FROM pg_index AS i
     WHERE i.indrelid = 'activities'::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid);
    -- Foreign keys (CHECK and NOT NULL constraints come along with LIKE).
    SELECT recreate || COALESCE(array_agg(format('ALTER TABLE activities ADD CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid))
                                          ORDER BY k.conname), ARRAY[]::text[])
      INTO recreate
      FROM pg_constraint AS k
     WHERE k.conrelid = 'activities'::regclass AND k.contype = 'f';
    -- Triggers (user-defined ones; the foreign keys' internal triggers come with the constraints).
    SELECT recreate || COALESCE(array_agg(pg_get_triggerdef(t.oid) ORDER BY t.tgname), ARRAY[]::text[])
      INTO recreate
      FROM pg_trigger AS t
     WHERE t.tgrelid = 'activities'::regclass AND NOT t.tgisinternal;
    -- Row-level security and its policies.
    IF rls THEN
        recreate := recreate || 'ALTER TABLE activities ENABLE ROW LEVEL SECURITY'::text;
    END IF;
    IF rls_forced THEN
        recreate := recreate || 'ALTER TABLE activities FORCE ROW LEVEL SECURITY'::text;
    END IF;
    SELECT recreate || COALESCE(array_agg(
               format('CREATE POLICY %I ON activities AS %s FOR %s TO %s', p.policyname, p.permissive, p.cmd,
                      (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                         FROM unnest(p.roles) AS r))
               || COALESCE(' USING (' || p.qual || ')', '')
               || COALESCE(' WITH CHECK (' || p.with_check || ')', '')
               ORDER BY p.policyname), ARRAY[]::text[])
      INTO recreate
      FROM pg_policies AS p
     WHERE p.schemaname = current_schema() AND p.tablename = 'activities';
    -- Privileges.
    SELECT recreate || COALESCE(array_agg(
               format('GRANT %s ON activities TO %s', a.privilege_type,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
               ORDER BY a.grantee, a.privilege_type), ARRAY[]::text[])
      INTO recreate
      FROM pg_class AS c, aclexplode(c.relacl) AS a
     WHERE c.oid = 'activities'::regclass AND a.grantee <> c.relowner;
    -- The table's comment.
    SELECT recreate || COALESCE(format('COMMENT ON TABLE activities IS %L', obj_description('activities'::regclass, 'pg_class')),
                                'SELECT 1')
      INTO recreate;

    -- Free the names the new table will use, and step the old one aside.
    FOR stmt IN
        SELECT format('DROP INDEX %s', i.indexrelid::regclass)
          FROM pg_index AS i
         WHERE i.indrelid = 'activities'::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
    LOOP
        EXECUTE stmt;
    END LOOP;
    ALTER TABLE activities DROP CONSTRAINT IF EXISTS activities_pkey;
    ALTER TABLE activities RENAME TO activities_unpartitioned;
    -- The copy must see every tenant's rows even when the owner is not a superuser (FORCE would
    -- otherwise filter the owner too, and the rows of other tenants would be silently lost).
    ALTER TABLE activities_unpartitioned DISABLE ROW LEVEL SECURITY;

    CREATE TABLE activities (
        LIKE activities_unpartitioned
        INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED
        INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING COMMENTS
    ) PARTITION BY RANGE (created_at);
    ALTER TABLE activities ADD CONSTRAINT activities_pkey PRIMARY KEY (tenant_id, id, created_at);

    -- Partitions for the standard range and for every existing row.
    SELECT min(created_at), max(created_at) INTO lo, hi FROM activities_unpartitioned;
    PERFORM lab_ensure_activity_partitions(
        LEAST(lo, '2024-01-01 00:00:00+00', date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - INTERVAL '24 months'),
        GREATEST(hi + INTERVAL '1 month', date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + INTERVAL '7 months'));

    -- Copy the rows (generated columns are computed again, not copied).
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute AS a
     WHERE a.attrelid = 'activities_unpartitioned'::regclass AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attgenerated = '';
    EXECUTE format('INSERT INTO activities (%s) SELECT %s FROM activities_unpartitioned', cols, cols);
    GET DIAGNOSTICS n_new = ROW_COUNT;
    SELECT count(*) INTO n_old FROM activities_unpartitioned;
    IF n_new <> n_old THEN
        RAISE EXCEPTION 'activities conversion copied % of % rows; nothing was changed', n_new, n_old;
    END IF;
    DROP TABLE activities_unpartitioned;

    FOREACH stmt IN ARRAY recreate LOOP
        EXECUTE stmt;
    END LOOP;
    -- INFO, not WARNING: news, not a problem; and INFO reaches the client whatever client_min_messages says.
    RAISE INFO 'activities is now partitioned by month and tenant hash (% rows moved)', n_new;
END
$$;


-- -------------------------------------------------------------------------------------------------
-- Section 3: the partition range (idempotent: creates only missing months)
-- -------------------------------------------------------------------------------------------------
-- From January 2024 (or 24 months back, if earlier) through 6 months after the current one.
SELECT count(*) AS partitions_created
  FROM lab_ensure_activity_partitions(
           LEAST('2024-01-01 00:00:00+00'::timestamptz,
                 date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - INTERVAL '24 months'),
           date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + INTERVAL '7 months');


-- -------------------------------------------------------------------------------------------------
-- Section 4: indexes on the parent -- plain CREATE INDEX, cascaded to every partition
-- -------------------------------------------------------------------------------------------------
-- Created on the partitioned parent, an index is created on each partition (existing and future)
-- and attached. They were carried over from 01/04 by the conversion; stated again for the reader.
-- (CREATE INDEX CONCURRENTLY is not possible on a partitioned parent, PITFALLS 22: for a live
-- system, CREATE INDEX ON ONLY activities, then CONCURRENTLY per partition, then ATTACH PARTITION.)
CREATE INDEX IF NOT EXISTS activities_tenant_created_idx ON activities (tenant_id, created_at DESC);
CREATE INDEX IF NOT EXISTS activities_tenant_contact_idx ON activities (tenant_id, contact_id);
CREATE INDEX IF NOT EXISTS activities_tenant_lead_idx ON activities (tenant_id, lead_id);


-- -------------------------------------------------------------------------------------------------
-- Section 5: every partition secured (also those made before a re-run of 02 changed the policy)
-- -------------------------------------------------------------------------------------------------
SELECT count(lab_secure_partition(relid)) AS partitions_secured
  FROM pg_partition_tree('activities')
 WHERE level > 0;

RESET lock_timeout;
RESET client_min_messages;
