-- =================================================================================================
-- tests/jsonb-performance.sql -- the lesson's Scenario 2: custom-field query plans, GIN vs btree
-- =================================================================================================
-- What:   EXPLAIN ANALYZE of the custom-field queries for the tenant acme, AS app_user (a superuser
--         or the owner would see through RLS and get plans no application ever gets, PITFALLS 1-2).
--         On the seed data (data/seed-tenants.sql: acme has 1,500 of the 3,000 contacts) the plans are:
--           section 2  Test 1, @> '{"industry": "tech"}' LIMIT 20 (1 contact in 8):
--                        Index Scan on a tenant-leading btree, Filter: (custom_fields @> ...). The scan
--                        stops at the 20th match, and on the seed that is the 20th entry: the index
--                        (tenant_id, cf_status, cf_priority) starts with the active, high-priority
--                        contacts, all of them tech (luck, PITFALLS 29). The GIN index is not
--                        tenant-scoped: it would collect every tenant's matches first.
--                      the same search for a rare value, @> '{"score": 42}' (1 contact in 100):
--                        Bitmap Index Scan on contacts_custom_fields_gin, then Filter: (tenant_id = ...).
--                      that value as ->> 'score' = '42': GIN cannot serve ->> (PITFALLS 16), so it is
--                        the btree scan of all 1,500 of acme's rows, Filter: ((custom_fields ->> ...).
--           section 3  Scenario 2, COUNT(*) ... @> '{"status": "active", "priority": "high"}' (1 in 16),
--                      one of two plans, depending on the GIN index's pending list:
--                        right after the seed, its new entries still wait in the pending list of the
--                        GIN index (fastupdate), whose pages the planner counts: Index Scan on a
--                        tenant-leading btree, Filter: (custom_fields @> ...), 1,406 rows removed;
--                        once the list is merged (autovacuum does it soon; VACUUM contacts at once; a
--                        plain ANALYZE does not): BitmapAnd of a Bitmap Index Scan on
--                        contacts_custom_fields_gin (188 rows, every tenant's) and one on the tenant btree.
--                      the same count through the generated columns of 04 (cf_status, cf_priority):
--                        Index Only Scan on contacts_tenant_cf_status_priority_idx, no Filter (Heap
--                        Fetches: 94 until a VACUUM sets the visibility map, then 0).
--           section 4  Test 2, leads of the last 30 days: Index Scan on leads_tenant_created_idx, the
--                        CURRENT_DATE range inside its Index Cond.
--         So GIN wins for selective containment, a btree leading with tenant_id wins for common values
--         within one tenant, the two are close in between (a plan can flip without any change to the
--         data, PITFALLS 29), and only the btree on generated columns counts without visiting the
--         heap (GIN has no index-only scans, PITFALLS 17). With more data the choice moves: sql/04's
--         header measured Scenario 2 at 300k contacts as a Bitmap Index Scan on the GIN index (89 ms)
--         against 1.6 ms for the Index Only Scan. Every @> can be an index condition here only because
--         04 marked jsonb_contains LEAKPROOF (PITFALLS 11); without that mark, as app_user, @> is a
--         Filter in every plan. Run it again after `labhelpers seed` and compare.
-- Needs:  01..05 and data/seed-tenants.sql (or the course's larger generated data). Run by the
--         administrator (it switches to app_user with SET ROLE, allowed: the administrator is a
--         superuser) or by app_user itself.
-- Session: leaves yours as it found it. Section 1 saves your role and app.current_tenant (in the
--         settings lab.saved_role, lab.saved_tenant), section 5 restores both. A tenant that was
--         never set comes back as '' (PostgreSQL cannot unset a setting once used; unset and ''
--         both mean zero rows to the policies, PITFALLS 4-6).
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/tests/jsonb-performance.sql "$DSN"
--         or in psql, from sql/ (the lesson's directory): \i tests/jsonb-performance.sql
-- Idempotent: read-only.
-- =================================================================================================

-- -------------------------------------------------------------------------------------------------
-- Section 1: remember your session, then act as the application: app_user, tenant acme
-- -------------------------------------------------------------------------------------------------
-- saved_role 'none' means no SET ROLE in force (you act as the user you logged in as).
SELECT set_config('lab.saved_role', current_setting('role'), FALSE) AS saved_role,
       set_config('lab.saved_tenant', COALESCE(current_setting('app.current_tenant', TRUE), ''), FALSE) AS saved_tenant;
SET ROLE app_user;
SELECT set_config('app.current_tenant', '11111111-1111-7111-8111-111111111111', FALSE);
SELECT current_user AS acting_as,
       (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) AS sees_through_rls,
       current_setting('app.current_tenant') AS tenant;


-- -------------------------------------------------------------------------------------------------
-- Section 2: Test 1 -- contact search by a custom field: a common value, a rare one, and ->>
-- -------------------------------------------------------------------------------------------------
-- The lesson's Test 1 (1 contact in 8): a tenant-leading btree and a Filter.
EXPLAIN (ANALYZE, BUFFERS)
SELECT * FROM contacts
WHERE tenant_id = '11111111-1111-7111-8111-111111111111'
  AND custom_fields @> '{"industry": "tech"}'
LIMIT 20;

-- A rare value (1 contact in 100): Bitmap Index Scan on the GIN index (jsonb_path_ops, @>).
EXPLAIN (ANALYZE, BUFFERS)
SELECT * FROM contacts
WHERE tenant_id = '11111111-1111-7111-8111-111111111111'
  AND custom_fields @> '{"score": 42}'
LIMIT 20;

-- The same rare value by path extraction (->>): GIN cannot serve it (PITFALLS 16).
EXPLAIN (ANALYZE, BUFFERS)
SELECT * FROM contacts
WHERE tenant_id = '11111111-1111-7111-8111-111111111111'
  AND custom_fields ->> 'score' = '42'
LIMIT 20;


-- -------------------------------------------------------------------------------------------------
-- Section 3: Scenario 2 -- count by two custom fields (should complete in < 100 ms)
-- -------------------------------------------------------------------------------------------------
-- The lesson's query (1 contact in 16; the tenant comes from the policy): btree and a Filter.
EXPLAIN (ANALYZE, BUFFERS)
SELECT COUNT(*) FROM contacts
WHERE custom_fields @> '{"status": "active", "priority": "high"}';

-- The same question through the generated columns of 04: an index-only count.
EXPLAIN (ANALYZE, BUFFERS)
SELECT COUNT(*) FROM contacts
WHERE cf_status = 'active' AND cf_priority = 'high';


-- -------------------------------------------------------------------------------------------------
-- Section 4: Test 2 -- lead pipeline over a custom field value
-- -------------------------------------------------------------------------------------------------
EXPLAIN (ANALYZE, BUFFERS)
SELECT
  stage,
  COUNT(*) AS count,
  SUM((custom_fields->>'value')::numeric) AS total_value
FROM leads
WHERE tenant_id = '11111111-1111-7111-8111-111111111111'
  AND created_at >= CURRENT_DATE - INTERVAL '30 days'
GROUP BY stage;


-- -------------------------------------------------------------------------------------------------
-- Section 5: the result itself, then your session back as section 1 found it
-- -------------------------------------------------------------------------------------------------
SELECT COUNT(*) AS active_high_priority_contacts FROM contacts
WHERE custom_fields @> '{"status": "active", "priority": "high"}';

-- set_config('role', ...) is SET ROLE with a value read from a setting ('none' = RESET ROLE).
SELECT set_config('role', current_setting('lab.saved_role'), FALSE) AS role,
       set_config('app.current_tenant', current_setting('lab.saved_tenant'), FALSE) AS app_current_tenant;
