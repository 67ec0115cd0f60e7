-- =================================================================================================
-- tests/jsonb-performance.sql -- the lesson's Scenario 2: custom-field query plans and timings
-- =================================================================================================
-- What:   EXPLAIN ANALYZE of the custom-field queries for the tenant acme, AS app_user (a superuser
--         or the owner would see through RLS and get plans no application ever gets, PITFALLS 1-2).
--         Compare the plan nodes: Bitmap Index Scan on contacts_custom_fields_gin (GIN, needs the
--         LEAKPROOF decision of 04) and Index Only Scan on contacts_tenant_cf_status_priority_idx
--         (the generated columns of 04).
-- Needs:  01..05 and data/seed-tenants.sql (or the course's larger generated data). Run by the
--         administrator: it switches to app_user with SET ROLE (allowed: the administrator is a
--         superuser) and back with RESET ROLE at the end.
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/tests/jsonb-performance.sql "$DSN"
-- Idempotent: read-only.
-- =================================================================================================

-- -------------------------------------------------------------------------------------------------
-- Section 1: act as the application: app_user, tenant acme
-- -------------------------------------------------------------------------------------------------
SET ROLE app_user;
SELECT set_config('app.current_tenant', '11111111-1111-7111-8111-111111111111', FALSE);
SELECT current_user AS acting_as,
       (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) AS sees_through_rls,
       current_setting('app.current_tenant') AS tenant;


-- -------------------------------------------------------------------------------------------------
-- Section 2: Test 1 -- contact search by a custom field (GIN jsonb_path_ops, @>)
-- -------------------------------------------------------------------------------------------------
EXPLAIN (ANALYZE, BUFFERS)
SELECT * FROM contacts
WHERE tenant_id = '11111111-1111-7111-8111-111111111111'
  AND custom_fields @> '{"industry": "tech"}'
LIMIT 20;


-- -------------------------------------------------------------------------------------------------
-- Section 3: Scenario 2 -- count by two custom fields (should complete in < 100 ms)
-- -------------------------------------------------------------------------------------------------
EXPLAIN (ANALYZE, BUFFERS)
SELECT COUNT(*) FROM contacts
WHERE custom_fields @> '{"status": "active", "priority": "high"}';

-- The same question through the generated columns of 04: an index-only count.
EXPLAIN (ANALYZE, BUFFERS)
SELECT COUNT(*) FROM contacts
WHERE cf_status = 'active' AND cf_priority = 'high';

-- Path extraction (->>): GIN cannot serve it (PITFALLS 16); the generated column can.
EXPLAIN (ANALYZE, BUFFERS)
SELECT COUNT(*) FROM contacts
WHERE custom_fields ->> 'industry' = 'tech';


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
-- Section 5: the results themselves, and back to the administrator
-- -------------------------------------------------------------------------------------------------
SELECT COUNT(*) AS active_high_priority_contacts FROM contacts
WHERE custom_fields @> '{"status": "active", "priority": "high"}';

RESET ROLE;
SELECT set_config('app.current_tenant', '', FALSE);
