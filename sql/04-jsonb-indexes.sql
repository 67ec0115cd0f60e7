-- =================================================================================================
-- 04-jsonb-indexes.sql -- indexes that the lesson's JSONB and time queries use AS app_user, UNDER RLS
-- =================================================================================================
-- What:   GIN indexes on custom_fields (jsonb_path_ops in production, jsonb_ops on contacts to
--         compare), stored generated columns with btree indexes for the hot contact fields, and a
--         LEAKPROOF decision for the three operator functions the lesson's own queries need.
-- Needs:  01..03. Run as the owner; section 4 needs a superuser (skipped with a WARNING otherwise).
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/04-jsonb-indexes.sql "$DSN"
--         or: labhelpers.stages.build(conn, through="04")
-- Idempotent: IF NOT EXISTS / ADD COLUMN IF NOT EXISTS; ALTER FUNCTION ... LEAKPROOF is a no-op the
--         second time.
--
-- The problem (PITFALLS 11). Under RLS the planner must evaluate the policy's predicate before any
-- user predicate that could leak values through an error or side channel. Only LEAKPROOF functions
-- may run first, and only they can become index conditions. jsonb @> (jsonb_contains) is not marked
-- LEAKPROOF, so for app_user the GIN index on custom_fields is never used, while the superuser
-- (who bypasses RLS) gets it: "JSONB queries use GIN indexes" silently holds only for the wrong role.
-- The same trap hides in Test 2: created_at >= CURRENT_DATE - INTERVAL '30 days' compares a
-- timestamptz column with a timestamp (date - interval = timestamp): the cross-type operator
-- timestamptz_ge_timestamp is not LEAKPROOF, so the time range is filtered row by row.
--
-- Measurements (PostgreSQL 18 embedded server, one laptop-class machine, warm cache; 3 tenants,
-- contacts 301,500 / 101,000 / 100,500, acme also 501,200 leads; as app_user with app.current_tenant
-- = acme unless said otherwise; EXPLAIN ANALYZE execution time):
--
--   query                                            no GIN            GIN, not leakproof   GIN + LEAKPROOF      generated col + btree
--   Scenario 2: count(*) @> {status:active,          Parallel Seq Scan Parallel Seq Scan    Bitmap Index Scan    Index Only Scan
--               priority:high} (18,844 rows)         165 ms            138 ms               contacts_custom_...  (tenant_id, cf_status,
--                                                                                           89 ms                cf_priority) 1.6 ms
--                                                    (superuser, GIN used: Bitmap Index Scan, 100 ms)
--   Test 1 rare value: @> {score:42} LIMIT 20        Seq Scan 1.9 ms   Seq Scan 1.2 ms      Bitmap Index 1.9 ms  -
--   Test 1: @> {industry:tech} LIMIT 20 (1 in 8)     Seq Scan 0.09 ms: LIMIT stops after 160 rows; no index needed
--   Test 2: leads, CURRENT_DATE - 30 days            Parallel Seq Scan 70-98 ms (time range is a Filter)
--                                                    timestamptz_ge_timestamp LEAKPROOF: Bitmap Index Scan on
--                                                    leads_tenant_created_idx, Index Cond has the range: 21 ms
--                                                    (superuser: 13-22 ms; rewritten as now() - interval: 17 ms)
--   Index sizes, 503,000 contacts: jsonb_path_ops GIN 23 MB, jsonb_ops GIN 32 MB,
--   btree (tenant_id, cf_status, cf_priority) 3.6 MB, btree (tenant_id, cf_industry) 3.5 MB.
--
-- Decisions
--   1. Production GIN opclass: jsonb_path_ops. It is ~30% smaller and faster for @>, the only JSONB
--      operator the lesson uses; it cannot serve ? / ?| / ?& (key exists), for which contacts keeps
--      a jsonb_ops index so the course can compare sizes and plans. Drop one of them in production.
--      GIN indexes are not tenant-scoped (no btree_gin in core): a match is found across all
--      tenants, then RLS filters, and GIN never gives index-only counts (PITFALLS 17).
--   2. Hot fields become stored generated columns with tenant-leading btree indexes: plain text =
--      is LEAKPROOF, so the policy's tenant_id and the field share one index condition, and counts
--      are index-only: 50x faster than the best GIN plan. Applications should query
--      cf_status = 'active' rather than custom_fields @> '{"status":"active"}'. Stored (not PG 18's
--      virtual default) because only stored generated columns can be indexed.
--   3. To keep the lesson's own queries working as written AND using their indexes as app_user,
--      jsonb_contains and the timestamptz-vs-timestamp comparisons are marked LEAKPROOF, on a
--      superuser's authority, in this database. Why we accept it: LEAKPROOF promises the function
--      has no side effects and raises no error that depends on its arguments. jsonb_contains
--      compares two already-valid jsonb values and cannot fail on their content. The cross-type
--      timestamp comparisons convert the timestamp side with overflow detection
--      (timestamp2timestamptz_opt_overflow, PostgreSQL 13+) and never raise, even for
--      '294276-12-31'. The price: it is a change to system catalogs that pg_dump does not carry,
--      managed services (RDS, Cloud SQL) do not allow, and every new database needs again; it
--      widens the trust placed in core code. Where it is not possible, decision 2 and rewriting
--      CURRENT_DATE - interval as now() - interval (or an explicit ::timestamptz) give the same plans
--      without it (PITFALLS 11 lists all three).
--      Rejected: a SECURITY DEFINER search function. Owned by a superuser it bypasses RLS and must
--      re-implement the tenant predicate itself (one bug = a cross-tenant leak); owned by the
--      non-superuser table owner, FORCE ROW LEVEL SECURITY applies to it and nothing is gained.
-- =================================================================================================

SET client_min_messages = warning;
SET lock_timeout = '10s';


-- -------------------------------------------------------------------------------------------------
-- Section 1: GIN indexes on custom_fields -- jsonb_path_ops for @> (production)
-- -------------------------------------------------------------------------------------------------
CREATE INDEX IF NOT EXISTS contacts_custom_fields_gin ON contacts USING gin (custom_fields jsonb_path_ops);
CREATE INDEX IF NOT EXISTS leads_custom_fields_gin ON leads USING gin (custom_fields jsonb_path_ops);
-- On the partitioned activities (after 05) this cascades to every partition; before 05 the
-- conversion carries it over.
CREATE INDEX IF NOT EXISTS activities_custom_fields_gin ON activities USING gin (custom_fields jsonb_path_ops);


-- -------------------------------------------------------------------------------------------------
-- Section 2: the comparison index -- jsonb_ops on contacts (serves ?, ?|, ?& as well; larger)
-- -------------------------------------------------------------------------------------------------
CREATE INDEX IF NOT EXISTS contacts_custom_fields_ops_gin ON contacts USING gin (custom_fields jsonb_ops);


-- -------------------------------------------------------------------------------------------------
-- Section 3: hot custom fields as stored generated columns, with tenant-leading btree indexes
-- -------------------------------------------------------------------------------------------------
-- Written by PostgreSQL from custom_fields on every insert and update: never written directly, never
-- out of date. Adding them rewrites the table once (cheap here: 04 runs before the data is loaded).
ALTER TABLE contacts
    ADD COLUMN IF NOT EXISTS cf_industry text GENERATED ALWAYS AS (custom_fields ->> 'industry') STORED,
    ADD COLUMN IF NOT EXISTS cf_status   text GENERATED ALWAYS AS (custom_fields ->> 'status') STORED,
    ADD COLUMN IF NOT EXISTS cf_priority text GENERATED ALWAYS AS (custom_fields ->> 'priority') STORED;
COMMENT ON COLUMN contacts.cf_industry IS 'custom_fields->>''industry'' (generated): query this, it is indexed and leakproof';
COMMENT ON COLUMN contacts.cf_status IS 'custom_fields->>''status'' (generated): query this, it is indexed and leakproof';
COMMENT ON COLUMN contacts.cf_priority IS 'custom_fields->>''priority'' (generated): query this, it is indexed and leakproof';

CREATE INDEX IF NOT EXISTS contacts_tenant_cf_industry_idx ON contacts (tenant_id, cf_industry);
CREATE INDEX IF NOT EXISTS contacts_tenant_cf_status_priority_idx ON contacts (tenant_id, cf_status, cf_priority);


-- -------------------------------------------------------------------------------------------------
-- Section 4: LEAKPROOF for the operators of the lesson's own queries (superuser only)
-- -------------------------------------------------------------------------------------------------
-- See decision 3 above. Marks (in this database only):
--     jsonb_contains(jsonb, jsonb)                       the @> of Test 1 and Scenario 2
--     timestamptz_{lt,le,eq,ge,gt,ne}_timestamp(...)     timestamptz column vs CURRENT_DATE - interval
--                                                        (Test 2, Test 3)
-- Check with: SELECT oid::regprocedure, proleakproof FROM pg_proc WHERE proleakproof AND proname ~ '^(jsonb_contains|timestamptz_.._timestamp)$';
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'pg_catalog.jsonb_contains(jsonb, jsonb)',
        'pg_catalog.timestamptz_lt_timestamp(timestamptz, timestamp)',
        'pg_catalog.timestamptz_le_timestamp(timestamptz, timestamp)',
        'pg_catalog.timestamptz_eq_timestamp(timestamptz, timestamp)',
        'pg_catalog.timestamptz_ge_timestamp(timestamptz, timestamp)',
        'pg_catalog.timestamptz_gt_timestamp(timestamptz, timestamp)',
        'pg_catalog.timestamptz_ne_timestamp(timestamptz, timestamp)']::regprocedure[]
    LOOP
        CONTINUE WHEN (SELECT proleakproof FROM pg_proc WHERE oid = f);
        IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            RAISE WARNING 'not a superuser: % and its kin stay non-leakproof, so as app_user the lesson''s @> queries cannot use GIN and Test 2''s CURRENT_DATE range is a filter; query the cf_* columns and use now() - interval instead', f;
            RETURN;
        END IF;
        EXECUTE format('ALTER FUNCTION %s LEAKPROOF', f);
    END LOOP;
END
$$;

-- Fresh statistics for the new columns and indexes.
ANALYZE contacts, leads;

RESET lock_timeout;
RESET client_min_messages;
