-- =================================================================================================
-- 04-jsonb-indexes.sql -- indexes that the lesson's JSONB and time queries use AS app_user, UNDER RLS
-- =================================================================================================
-- What:   GIN indexes on custom_fields (jsonb_path_ops in production, jsonb_ops on contacts to
--         compare), stored generated columns with btree indexes for the hot contact fields, and a
--         LEAKPROOF decision for the operator functions the lesson's own queries need.
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
-- Each section below says which fix it is and what it costs; the plans and timings of every fix,
-- with machine and date: README (Performance) and notebooks 03 and 05.
-- =================================================================================================

SET client_min_messages = warning;
SET lock_timeout = '10s';


-- -------------------------------------------------------------------------------------------------
-- Section 1: GIN indexes on custom_fields -- jsonb_path_ops for @> (production)
-- -------------------------------------------------------------------------------------------------
-- The production opclass is jsonb_path_ops: about 30% smaller than jsonb_ops and faster for @>, the
-- only JSONB operator the lesson uses; it cannot serve ? / ?| / ?& (key exists), for which contacts
-- keeps a jsonb_ops index (section 2) so the course can compare sizes and plans. Drop one of them in
-- production. GIN indexes are not tenant-scoped (no btree_gin in core): a match is found across all
-- tenants, then RLS filters, and GIN never gives index-only counts (PITFALLS 17).
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
-- Plain text = is LEAKPROOF, so the policy's tenant_id and the field share one index condition, and
-- counts are index-only: far faster than any GIN plan. Applications should query
-- cf_status = 'active' rather than custom_fields @> '{"status":"active"}'. Stored (not PG 18's
-- virtual default) because only stored generated columns can be indexed.
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
-- To keep the lesson's own queries working as written AND using their indexes as app_user,
-- jsonb_contains and the timestamptz-vs-timestamp comparisons are marked LEAKPROOF, on a
-- superuser's authority, in this database. Why we accept it: LEAKPROOF promises the function has no
-- side effects and raises no error that depends on its arguments. jsonb_contains compares two
-- already-valid jsonb values and cannot fail on their content. The cross-type timestamp comparisons
-- convert the timestamp side with overflow detection (timestamp2timestamptz_opt_overflow,
-- PostgreSQL 13+) and never raise, even for '294276-12-31'. The price: it is a change to system
-- catalogs that pg_dump does not carry, managed services (RDS, Cloud SQL) do not allow, and every new
-- database needs again; it widens the trust placed in core code. Where it is not possible, section 3
-- and rewriting CURRENT_DATE - interval as now() - interval (or an explicit ::timestamptz) give the
-- same plans without it (PITFALLS 11 lists all three).
-- Rejected: a SECURITY DEFINER search function. Owned by a superuser it bypasses RLS and must
-- re-implement the tenant predicate itself (one bug = a cross-tenant leak); owned by the
-- non-superuser table owner, FORCE ROW LEVEL SECURITY applies to it and nothing is gained.
-- Marks (in this database only):
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
