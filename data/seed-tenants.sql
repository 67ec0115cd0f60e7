-- =================================================================================================
-- data/seed-tenants.sql -- the three scenario tenants of the lesson, with deterministic data
-- =================================================================================================
-- What:   three tenants with FIXED ids, five users each (one per role, two plain users), their
--         custom field definitions (lab_define_default_custom_fields: 100+ per entity), and
--         contacts, leads and activities with custom fields. Deterministic: no random(); every value
--         derives from the row number, every timestamp from the row number and now().
--
--             slug     tenant id                               contacts  leads  activities
--             acme     11111111-1111-7111-8111-111111111111        1500    600        3000
--             globex   22222222-2222-7222-8222-222222222222        1000    400        2000
--             initech  33333333-3333-7333-8333-333333333333         500    200        1000
--
--         Users of tenant T (T = the tenant id's first 8 hex digits, e.g. 11111111 for acme):
--             T-0000-7000-8000-000000000001  admin     admin@<slug>.example
--             T-0000-7000-8000-000000000002  manager   manager@<slug>.example
--             T-0000-7000-8000-000000000003  user      user1@<slug>.example
--             T-0000-7000-8000-000000000004  user      user2@<slug>.example
--             T-0000-7000-8000-000000000005  viewer    viewer@<slug>.example
--         Contacts and leads are owned by the manager and the two users in turn; activities are
--         owned the same way, and tasks are assigned to the next user.
--         What the lesson's queries find: contacts with {"industry":"tech"} (1 in 8) and with
--         {"status":"active","priority":"high"} (1 in 16); leads created in the last 30 days in
--         every stage, with custom_fields->'value' = value; activities in the last 7 days, the last
--         30 days, across the past two years, and in January 2024 (1 in 10, UTC).
-- Needs:  01..03 (05 optional: activities may be plain or partitioned). Run as the administrator.
--         Works for a superuser (sees through RLS) and for a non-superuser owner (FORCE ROW LEVEL
--         SECURITY filters the owner too): each tenant's rows are written with app.current_tenant
--         set to that tenant, transaction-locally.
-- Run:    psql -v ON_ERROR_STOP=1 -f data/seed-tenants.sql "$DSN"
--         or: labhelpers.stages.build(conn)  (the last stage)
-- Idempotent: fixed keys with ON CONFLICT DO NOTHING (activities: skipped when their id exists, as
--         their created_at moves with now()). A re-run adds nothing.
-- =================================================================================================

SET client_min_messages = warning;


-- -------------------------------------------------------------------------------------------------
-- Section 1: deterministic ids -- a session-temporary helper (gone when the session ends)
-- -------------------------------------------------------------------------------------------------
-- A UUIDv7-shaped id: 48 ordered bits from (tenant, kind, n), version 7, variant 2, then md5 bits.
-- Same arguments, same id, on every run and every server.
CREATE OR REPLACE FUNCTION pg_temp.seed_id(tenant_no integer, kind integer, n integer) RETURNS uuid
LANGUAGE sql IMMUTABLE
AS $$
    SELECT (lpad(to_hex(tenant_no), 2, '0') || lpad(to_hex(kind), 2, '0') || lpad(to_hex(n), 8, '0')
            || '7' || substr(md5(tenant_no || ':' || kind || ':' || n), 1, 3)
            || '8' || substr(md5(tenant_no || ':' || kind || ':' || n), 4, 15))::uuid
$$;


-- -------------------------------------------------------------------------------------------------
-- Section 2: tenants, users, custom field definitions, contacts, leads, activities
-- -------------------------------------------------------------------------------------------------
-- One DO block (one transaction): for each tenant, set the tenant context, then write its rows.
DO $$
DECLARE
    t record;
    users uuid[];
BEGIN
    FOR t IN
        SELECT *
          FROM (VALUES
                (1, '11111111-1111-7111-8111-111111111111'::uuid, 'acme',    'Acme Corporation', 'enterprise', 1500, 600, 3000),
                (2, '22222222-2222-7222-8222-222222222222'::uuid, 'globex',  'Globex Inc.',      'pro',        1000, 400, 2000),
                (3, '33333333-3333-7333-8333-333333333333'::uuid, 'initech', 'Initech LLC',      'starter',     500, 200, 1000))
               AS v (no, id, slug, name, plan, n_contacts, n_leads, n_activities)
         ORDER BY no
    LOOP
        PERFORM set_config('app.current_tenant', t.id::text, TRUE);

        -- The tenant.
        INSERT INTO tenants (id, slug, name, plan, status, created_at)
        VALUES (t.id, t.slug, t.name, t.plan, 'active', '2024-01-01 00:00:00+00'::timestamptz + (t.no - 1) * INTERVAL '1 day')
        ON CONFLICT (id) DO NOTHING;

        -- Its users, one per role (two plain users).
        INSERT INTO tenant_users (tenant_id, id, email, full_name, role)
        SELECT t.id,
               (substr(t.id::text, 1, 8) || '-0000-7000-8000-' || lpad(u.k::text, 12, '0'))::uuid,
               u.login || '@' || t.slug || '.example',
               initcap(t.slug) || ' ' || u.label,
               u.role
          FROM (VALUES (1, 'admin',   'Admin',   'admin'),
                       (2, 'manager', 'Manager', 'manager'),
                       (3, 'user1',   'User 1',  'user'),
                       (4, 'user2',   'User 2',  'user'),
                       (5, 'viewer',  'Viewer',  'viewer')) AS u (k, login, label, role)
        ON CONFLICT (tenant_id, id) DO NOTHING;

        -- Owners in turn: the manager, user1, user2.
        users := ARRAY[(substr(t.id::text, 1, 8) || '-0000-7000-8000-000000000002')::uuid,
                       (substr(t.id::text, 1, 8) || '-0000-7000-8000-000000000003')::uuid,
                       (substr(t.id::text, 1, 8) || '-0000-7000-8000-000000000004')::uuid];

        -- Its custom field definitions (hot fields + cf_001..cf_100 per entity).
        PERFORM lab_define_default_custom_fields(t.id);

        -- Contacts: industry cycles through 8 values (tech when n % 8 = 0), status through 4
        -- (active when n % 4 = 0), priority through 4 on n / 4 (high when (n / 4) % 4 = 2), so
        -- 1 contact in 16 is active with high priority. Two sparse fields each.
        INSERT INTO contacts (tenant_id, id, first_name, last_name, email, phone, company, title, owner_id,
                              custom_fields, created_at, updated_at)
        SELECT t.id,
               pg_temp.seed_id(t.no, 1, n),
               (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken','Margaret','Linus'])[1 + n % 10],
               (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen','Thompson','Hamilton','Torvalds'])[1 + (n / 10) % 10],
               'contact' || n || '@' || t.slug || '.example',
               '+1 555 ' || lpad((n % 10000)::text, 4, '0'),
               (ARRAY['Northwind','Contoso','Fabrikam','Umbrella','Hooli','Vandelay','Wonka','Stark'])[1 + (n / 3) % 8] || ' ' || (n % 97),
               (ARRAY['CEO','CTO','VP Sales','Engineer','Buyer','Analyst'])[1 + n % 6],
               users[1 + n % 3],
               jsonb_build_object(
                   'industry', (ARRAY['tech','finance','healthcare','retail','manufacturing','education','media','energy'])[1 + n % 8],
                   'status',   (ARRAY['active','inactive','prospect','churned'])[1 + n % 4],
                   'priority', (ARRAY['low','medium','high','urgent'])[1 + (n / 4) % 4],
                   'region',   (ARRAY['north_america','emea','apac','latam'])[1 + (n / 2) % 4],
                   'source',   (ARRAY['web','referral','event','outbound','partner','ads'])[1 + n % 6],
                   'score',    (n * 37) % 100)
               || CASE WHEN n % 17 = 0 THEN '{"vip": true}'::jsonb ELSE '{}'::jsonb END
               || jsonb_build_object(format('cf_%s', lpad((1 + n % 100)::text, 3, '0')),
                                     CASE n % 5
                                         WHEN 0 THEN to_jsonb('text ' || n)
                                         WHEN 1 THEN to_jsonb(n)
                                         WHEN 2 THEN to_jsonb(n % 2 = 0)
                                         WHEN 3 THEN to_jsonb(to_char(date '2025-01-01' + n % 365, 'YYYY-MM-DD'))
                                         ELSE to_jsonb((ARRAY['opt_a','opt_b','opt_c','opt_d','opt_e'])[1 + n % 5])
                                     END,
                                     format('cf_%s', lpad((1 + (n + 50) % 100)::text, 3, '0')),
                                     CASE (n + 50) % 5
                                         WHEN 0 THEN to_jsonb('text ' || n)
                                         WHEN 1 THEN to_jsonb(n)
                                         WHEN 2 THEN to_jsonb(n % 2 = 0)
                                         WHEN 3 THEN to_jsonb(to_char(date '2025-01-01' + n % 365, 'YYYY-MM-DD'))
                                         ELSE to_jsonb((ARRAY['opt_a','opt_b','opt_c','opt_d','opt_e'])[1 + n % 5])
                                     END),
               now() - (n % 700) * INTERVAL '1 day' - (n % 1440) * INTERVAL '1 minute',
               now() - (n % 700) * INTERVAL '1 day' - (n % 1440) * INTERVAL '1 minute'
          FROM generate_series(1, t.n_contacts) AS n
        ON CONFLICT (tenant_id, id) DO NOTHING;

        -- Leads: stage cycles through all 6 stages and created_at through the last 60 days, so the
        -- last 30 days hold every stage. custom_fields->'value' mirrors value (a CHECK insists).
        INSERT INTO leads (tenant_id, id, contact_id, owner_id, title, stage, value, currency,
                           expected_close_date, closed_at, custom_fields, created_at, updated_at)
        SELECT t.id, pg_temp.seed_id(t.no, 2, n), pg_temp.seed_id(t.no, 1, 1 + (n * 7) % t.n_contacts),
               users[1 + n % 3],
               'Deal ' || n || ' - ' || (ARRAY['licenses','renewal','upgrade','services','pilot'])[1 + n % 5],
               l.stage, l.value, 'USD',
               (now() + (n % 90) * INTERVAL '1 day')::date,
               CASE WHEN l.stage IN ('won', 'lost') THEN l.created_at + INTERVAL '1 hour' END,
               jsonb_build_object(
                   'value',            l.value,
                   'industry',         (ARRAY['tech','finance','healthcare','retail','manufacturing','education','media','energy'])[1 + n % 8],
                   'priority',         (ARRAY['low','medium','high','urgent'])[1 + (n / 6) % 4],
                   'region',           (ARRAY['north_america','emea','apac','latam'])[1 + (n / 2) % 4],
                   'source',           (ARRAY['web','referral','event','outbound','partner','ads'])[1 + (n / 3) % 6],
                   'probability',      (ARRAY[10, 25, 50, 75, 100, 0])[1 + n % 6],
                   'product_interest', (ARRAY['starter','pro','enterprise','services'])[1 + n % 4],
                   format('cf_%s', lpad((1 + n % 100)::text, 3, '0')),
                   CASE n % 5
                       WHEN 0 THEN to_jsonb('text ' || n)
                       WHEN 1 THEN to_jsonb(n)
                       WHEN 2 THEN to_jsonb(n % 2 = 0)
                       WHEN 3 THEN to_jsonb(to_char(date '2025-01-01' + n % 365, 'YYYY-MM-DD'))
                       ELSE to_jsonb((ARRAY['opt_a','opt_b','opt_c','opt_d','opt_e'])[1 + n % 5])
                   END),
               l.created_at, l.created_at
          FROM generate_series(1, t.n_leads) AS n
         CROSS JOIN LATERAL (
                SELECT (ARRAY['new','qualified','proposal','negotiation','won','lost'])[1 + n % 6] AS stage,
                       (1000 + (n * 7919) % 99000)::numeric(14,2) AS value,
                       now() - (n % 60) * INTERVAL '1 day' - (n % 720) * INTERVAL '1 minute' AS created_at
               ) AS l
        ON CONFLICT (tenant_id, id) DO NOTHING;

        -- Activities: 1 in 10 in January 2024 (UTC), 3 in 10 in the last 6 days, 2 in 10 between
        -- 7 and 27 days ago, the rest over the past 23 months.
        INSERT INTO activities (tenant_id, id, type, subject, body, contact_id, lead_id, owner_id, assigned_to,
                                due_at, completed_at, custom_fields, created_at, updated_at)
        SELECT t.id, a.id, a.type,
               initcap(a.type) || ' #' || n || ' with contact ' || (1 + n % t.n_contacts),
               CASE WHEN n % 4 = 0 THEN 'Notes for activity ' || n END,
               pg_temp.seed_id(t.no, 1, 1 + n % t.n_contacts),
               CASE WHEN n % 3 = 0 THEN pg_temp.seed_id(t.no, 2, 1 + n % t.n_leads) END,
               users[1 + n % 3],
               CASE WHEN a.type = 'task' THEN users[1 + (n + 1) % 3] END,
               CASE WHEN a.type IN ('task', 'meeting') THEN a.created_at + INTERVAL '2 days' END,
               CASE WHEN n % 2 = 0 THEN a.created_at + INTERVAL '30 minutes' END,
               jsonb_build_object(
                   'priority',         (ARRAY['low','medium','high','urgent'])[1 + (n / 7) % 4],
                   'outcome',          (ARRAY['connected','left_voicemail','no_answer','completed','rescheduled','cancelled'])[1 + n % 6],
                   'channel',          (ARRAY['phone','email','video','in_person','chat'])[1 + n % 5],
                   'sentiment',        (ARRAY['positive','neutral','negative'])[1 + n % 3],
                   'duration_minutes', 5 + (n * 13) % 85,
                   format('cf_%s', lpad((1 + n % 100)::text, 3, '0')),
                   CASE n % 5
                       WHEN 0 THEN to_jsonb('text ' || n)
                       WHEN 1 THEN to_jsonb(n)
                       WHEN 2 THEN to_jsonb(n % 2 = 0)
                       WHEN 3 THEN to_jsonb(to_char(date '2025-01-01' + n % 365, 'YYYY-MM-DD'))
                       ELSE to_jsonb((ARRAY['opt_a','opt_b','opt_c','opt_d','opt_e'])[1 + n % 5])
                   END),
               a.created_at, a.created_at
          FROM generate_series(1, t.n_activities) AS n
         CROSS JOIN LATERAL (
                SELECT pg_temp.seed_id(t.no, 3, n) AS id,
                       (ARRAY['call','email','meeting','note','task','sms','demo'])[1 + n % 7] AS type,
                       CASE
                           WHEN n % 10 = 0 THEN
                               '2024-01-01 00:00:00+00'::timestamptz + ((n * 7) % (29 * 1440)) * INTERVAL '1 minute'
                           WHEN n % 10 IN (1, 2, 3) THEN
                               now() - ((n * 13) % (6 * 1440)) * INTERVAL '1 minute'
                           WHEN n % 10 IN (4, 5) THEN
                               now() - INTERVAL '7 days' - ((n * 17) % (20 * 1440)) * INTERVAL '1 minute'
                           ELSE
                               now() - INTERVAL '30 days' - ((n * 31) % (670 * 1440)) * INTERVAL '1 minute'
                       END AS created_at
               ) AS a
         WHERE NOT EXISTS (SELECT 1 FROM activities AS x WHERE x.tenant_id = t.id AND x.id = a.id);
    END LOOP;
END
$$;

-- Fresh statistics, so the first plans a student sees are the real ones.
ANALYZE tenants, tenant_users, custom_field_definitions, contacts, leads, activities;

RESET client_min_messages;
