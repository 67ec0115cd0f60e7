-- =================================================================================================
-- 02-rls-policies.sql -- application roles, grants and row-level security
-- =================================================================================================
-- What:   the login roles app_user, app_readonly and app_admin; their privileges in this database;
--         row-level security ENABLED and FORCED on every tenant table, with fail-closed tenant
--         policies and role-based write rules inside a tenant.
-- Needs:  01-foundation-schema.sql. Run as the administrator who owns the tables, with the right to
--         create roles (the embedded server's and docker's `postgres`). 03 reuses
--         lab_current_user_role(); 05 secures each partition with lab_secure_partition().
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/02-rls-policies.sql "$DSN"
--         or: labhelpers.stages.build(conn, through="02")
-- Idempotent: roles are created only if missing; policies are dropped and re-created with the same
--         definition, so running it twice leaves the same catalog.
--
-- How the application uses it (every query of a tenant runs as app_user, never as the owner):
--     BEGIN;
--     SELECT set_config('app.current_tenant', '<tenant uuid>', true);   -- transaction-scoped, pool-safe
--     SELECT set_config('app.current_user_id', '<tenant_users.id>', true);  -- needed for writes
--     ... queries ...
--     COMMIT;
--
-- The rules, for app_user:
--   * tenant context unset or empty     -> no rows, no error (fail closed, PITFALLS 4-6)
--   * reads                             -> every row of the current tenant (viewers included)
--   * writes need app.current_user_id = an active tenant_users.id of the current tenant:
--       admin, manager                  -> change every contact, lead, activity of the tenant
--       user                            -> change only the contacts/leads it owns and the
--                                          activities it owns or is assigned to
--       viewer, unknown or unset user   -> no writes (fail closed: a background job that writes
--                                          must act as a named user, or connect as app_admin)
--       admin only                      -> tenant_users and custom_field_definitions
--   app_readonly: SELECT only (reporting, read replicas), still confined to one tenant.
--   app_admin:    tenant operations and background jobs: every write inside the current tenant,
--                 without the per-user rules; still confined to one tenant, never sees through RLS.
-- None of them is SUPERUSER, has BYPASSRLS, or owns a table (PITFALLS 1-2).
-- =================================================================================================

SET client_min_messages = warning;
SET lock_timeout = '10s';


-- -------------------------------------------------------------------------------------------------
-- Section 1: login roles (cluster-wide, so created only when missing)
-- -------------------------------------------------------------------------------------------------
-- LAB ONLY: the passwords are '<role>_password', as in docker-compose.yml. Never ship these.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['app_user', 'app_readonly', 'app_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE',
                               r, r || '_password');
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;   -- another database's build created it at the same moment
            END;
        ELSIF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r AND (rolsuper OR rolbypassrls OR NOT rolcanlogin)) THEN
            -- An existing role that sees through RLS would make every isolation claim false.
            EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS', r);
            RAISE WARNING 'role % existed with SUPERUSER, BYPASSRLS or NOLOGIN: reset to LOGIN NOSUPERUSER NOBYPASSRLS', r;
        END IF;
    END LOOP;
END
$$;


-- One shared login role shares its activity (PITFALLS 27): any app_user session can read, in
-- pg_stat_activity, pg_stat_get_activity(NULL) and pg_stat_get_backend_activity(), the full text of
-- the statement another app_user session is running -- another tenant's search terms, e-mails and
-- custom-field values, wherever they sit in SQL text as literals. Revoking those views and functions
-- is per database while activity is cluster-wide; switching statement tracking off for the roles
-- closes every path at once, on every database of the server (roles are cluster-wide):
--
--     ALTER ROLE app_user     SET track_activities = off;
--     ALTER ROLE app_readonly SET track_activities = off;
--     ALTER ROLE app_admin    SET track_activities = off;
--
-- track_activities is superuser-only, so the roles cannot switch it back on (not with SET, RESET,
-- set_config nor a startup option). The cost: the DBA's pg_stat_activity shows these sessions with
-- state 'disabled' and no statement text (pg_stat_statements, pg_locks and the server log still work).
-- Below, the same three statements, run only where not yet in force: concurrent builds on one
-- server must not update the same role at the same moment.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['app_user', 'app_readonly', 'app_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_roles ro ON ro.oid = s.setrole
                       WHERE ro.rolname = r AND s.setdatabase = 0
                         AND 'track_activities=off' = ANY (s.setconfig)) THEN
            EXECUTE format('ALTER ROLE %I SET track_activities = off', r);
        END IF;
    END LOOP;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'not a superuser: statement text of app-role sessions stays visible to every app-role session'
        ' (ask the DBA for: ALTER ROLE app_user SET track_activities = off, and the same for app_readonly, app_admin)';
END
$$;


-- -------------------------------------------------------------------------------------------------
-- Section 2: privileges in this database
-- -------------------------------------------------------------------------------------------------
-- Privileges say WHICH tables and commands a role may use; the policies below say WHICH ROWS.
GRANT USAGE ON SCHEMA public TO app_user, app_readonly, app_admin;

GRANT SELECT ON tenants TO app_user, app_readonly, app_admin;
GRANT INSERT, UPDATE ON tenants TO app_admin;

GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_users, contacts, leads, activities TO app_user, app_admin;
GRANT SELECT ON tenant_users, contacts, leads, activities TO app_readonly;

-- The keys are uuids, so there are no sequences today; this keeps any future serial column usable.
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app_user, app_admin;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO app_readonly;


-- -------------------------------------------------------------------------------------------------
-- Section 3: who is acting? -- the current user's role inside the current tenant
-- -------------------------------------------------------------------------------------------------
-- The write rules need the acting user's role, which lives in tenant_users. A policy on tenant_users
-- cannot query tenant_users directly (infinite recursion), hence this function. It is STABLE and
-- every policy calls it as (SELECT lab_current_user_role()), so it runs ONCE per statement as an
-- InitPlan, not per row (PITFALLS 10). It is SECURITY INVOKER: it reads tenant_users through the
-- caller's own tenant policy, so it can only ever see the current tenant. Its search_path is pinned
-- to the lab's schema (public, then pg_catalog, pg_temp last), so that a temporary table named
-- tenant_users cannot impersonate the real one.
-- The TENANT predicate of the policies does NOT use a function: it reads the setting directly.
CREATE OR REPLACE FUNCTION lab_current_user_role() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = public, pg_catalog, pg_temp
AS $$
    SELECT u.role
      FROM tenant_users AS u
     WHERE u.tenant_id = NULLIF(current_setting('app.current_tenant', TRUE), '')::uuid
       AND u.id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid
       AND u.status = 'active'
$$;
COMMENT ON FUNCTION lab_current_user_role() IS
    'Role (admin|manager|user|viewer) of app.current_user_id in app.current_tenant; NULL when unset or unknown';


-- -------------------------------------------------------------------------------------------------
-- Section 4: tenant isolation -- the same fail-closed policy on every tenant table
-- -------------------------------------------------------------------------------------------------
-- Four statements per table, the heart of the lesson (written out for each table below):
--   ENABLE ROW LEVEL SECURITY    policies now filter every query on the table;
--   FORCE ROW LEVEL SECURITY     ... the owner's too (without it, the owner ignores them, PITFALLS 2);
--   DROP POLICY IF EXISTS, CREATE POLICY <table>_tenant_isolation: the table's single PERMISSIVE
--                                policy, dropped and re-created so that a re-run leaves the same one.
-- Its condition, tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid:
--   * current_setting(..., true) returns NULL instead of raising when the setting was never set (4);
--   * NULLIF(..., '') turns the '' left behind by RESET / a finished SET LOCAL into NULL (5);
--   * NULL = anything is not true, so both mean zero rows, never all rows (6);
--   * the setting is read directly: a stable expression, computed once, matched to the
--     (tenant_id, ...) indexes (10);
--   * USING filters the rows a statement can see; WITH CHECK pins every INSERT and UPDATE to the
--     current tenant (9). It is the ONLY permissive policy on each table; every other rule is
--     RESTRICTIVE, so rules are AND-ed, never OR-ed.

-- tenants: its key is id, not tenant_id. app_user and app_readonly read their own tenant's row;
-- app_admin may also update it (or register a new tenant id it has set as current).
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenants_tenant_isolation ON tenants;
CREATE POLICY tenants_tenant_isolation ON tenants AS PERMISSIVE FOR ALL TO PUBLIC
    USING (id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

ALTER TABLE tenant_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_users FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_users_tenant_isolation ON tenant_users;
CREATE POLICY tenant_users_tenant_isolation ON tenant_users AS PERMISSIVE FOR ALL TO PUBLIC
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE contacts FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS contacts_tenant_isolation ON contacts;
CREATE POLICY contacts_tenant_isolation ON contacts AS PERMISSIVE FOR ALL TO PUBLIC
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

ALTER TABLE leads ENABLE ROW LEVEL SECURITY;
ALTER TABLE leads FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS leads_tenant_isolation ON leads;
CREATE POLICY leads_tenant_isolation ON leads AS PERMISSIVE FOR ALL TO PUBLIC
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

ALTER TABLE activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE activities FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS activities_tenant_isolation ON activities;
CREATE POLICY activities_tenant_isolation ON activities AS PERMISSIVE FOR ALL TO PUBLIC
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

-- Partitions do not inherit RLS (PITFALLS 3): a query that names a partition directly skips the
-- parent's policies, and pg_stats would show its values. So every partition (05 calls this for each
-- one it creates) gets BOTH defences: RLS enabled+forced with the tenant policy, AND no privileges
-- for the application roles (they reach the rows through the parent, whose privileges and policies
-- apply; privileges of partitions are not checked then).
-- activities has dozens of partitions and gains one a month, so for them the four statements above
-- are GENERATED (format + EXECUTE: the only generated SQL of this file, repetition over partitions):
-- lab_secure_table(t, column) runs exactly those statements for table t, and lab_secure_partition(p)
-- adds the REVOKE.
CREATE OR REPLACE FUNCTION lab_secure_table(tbl regclass, tenant_column name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    pol  name := left(split_part(tbl::text, '.', -1), 46) || '_tenant_isolation';
    pred text := format('%I = NULLIF(current_setting(''app.current_tenant'', true), '''')::uuid', tenant_column);
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', pol, tbl);
    EXECUTE format('CREATE POLICY %I ON %s AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
                   pol, tbl, pred, pred);
END
$$;
COMMENT ON FUNCTION lab_secure_table(regclass, name) IS
    'Enable+force RLS on a table and (re)create its fail-closed <table>_tenant_isolation policy';

CREATE OR REPLACE FUNCTION lab_secure_partition(part regclass) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM lab_secure_table(part);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, app_user, app_readonly, app_admin', part);
END
$$;
COMMENT ON FUNCTION lab_secure_partition(regclass) IS
    'Secure a partition: RLS enabled+forced with the tenant policy, and no direct access for the app roles';

REVOKE ALL ON FUNCTION lab_secure_table(regclass, name), lab_secure_partition(regclass) FROM PUBLIC;

-- Any partitions that already exist (when this file is re-run after 05).
DO $$
BEGIN
    PERFORM lab_secure_partition(relid) FROM pg_partition_tree('activities') WHERE level > 0 ORDER BY relid;
END
$$;


-- -------------------------------------------------------------------------------------------------
-- Section 5: roles inside a tenant -- RESTRICTIVE write rules for app_user
-- -------------------------------------------------------------------------------------------------
-- RESTRICTIVE policies are AND-ed with the tenant policy: they can only narrow, never widen
-- (PITFALLS 9). They apply TO app_user, the role the application uses for end users. A user id that
-- is unset, unknown, disabled or from another tenant gives a NULL role: no write passes.
-- INSERT is checked on the new row, DELETE on the old row, UPDATE on both (USING + WITH CHECK), so
-- a user can neither take over someone else's record nor give its own away.

-- contacts and leads: admins and managers change everything, users only what they own.
DROP POLICY IF EXISTS contacts_insert_by_role ON contacts;
CREATE POLICY contacts_insert_by_role ON contacts AS RESTRICTIVE FOR INSERT TO app_user
    WITH CHECK ((SELECT lab_current_user_role()) IN ('admin', 'manager')
                OR ((SELECT lab_current_user_role()) = 'user'
                    AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid));
DROP POLICY IF EXISTS contacts_update_by_role ON contacts;
CREATE POLICY contacts_update_by_role ON contacts AS RESTRICTIVE FOR UPDATE TO app_user
    USING ((SELECT lab_current_user_role()) IN ('admin', 'manager')
           OR ((SELECT lab_current_user_role()) = 'user'
               AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid))
    WITH CHECK ((SELECT lab_current_user_role()) IN ('admin', 'manager')
                OR ((SELECT lab_current_user_role()) = 'user'
                    AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid));
DROP POLICY IF EXISTS contacts_delete_by_role ON contacts;
CREATE POLICY contacts_delete_by_role ON contacts AS RESTRICTIVE FOR DELETE TO app_user
    USING ((SELECT lab_current_user_role()) IN ('admin', 'manager')
           OR ((SELECT lab_current_user_role()) = 'user'
               AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid));

DROP POLICY IF EXISTS leads_insert_by_role ON leads;
CREATE POLICY leads_insert_by_role ON leads AS RESTRICTIVE FOR INSERT TO app_user
    WITH CHECK ((SELECT lab_current_user_role()) IN ('admin', 'manager')
                OR ((SELECT lab_current_user_role()) = 'user'
                    AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid));
DROP POLICY IF EXISTS leads_update_by_role ON leads;
CREATE POLICY leads_update_by_role ON leads AS RESTRICTIVE FOR UPDATE TO app_user
    USING ((SELECT lab_current_user_role()) IN ('admin', 'manager')
           OR ((SELECT lab_current_user_role()) = 'user'
               AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid))
    WITH CHECK ((SELECT lab_current_user_role()) IN ('admin', 'manager')
                OR ((SELECT lab_current_user_role()) = 'user'
                    AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid));
DROP POLICY IF EXISTS leads_delete_by_role ON leads;
CREATE POLICY leads_delete_by_role ON leads AS RESTRICTIVE FOR DELETE TO app_user
    USING ((SELECT lab_current_user_role()) IN ('admin', 'manager')
           OR ((SELECT lab_current_user_role()) = 'user'
               AND owner_id = NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid));

-- activities: a user also changes the activities (tasks) assigned to it.
DROP POLICY IF EXISTS activities_insert_by_role ON activities;
CREATE POLICY activities_insert_by_role ON activities AS RESTRICTIVE FOR INSERT TO app_user
    WITH CHECK ((SELECT lab_current_user_role()) IN ('admin', 'manager')
                OR ((SELECT lab_current_user_role()) = 'user'
                    AND NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid IN (owner_id, assigned_to)));
DROP POLICY IF EXISTS activities_update_by_role ON activities;
CREATE POLICY activities_update_by_role ON activities AS RESTRICTIVE FOR UPDATE TO app_user
    USING ((SELECT lab_current_user_role()) IN ('admin', 'manager')
           OR ((SELECT lab_current_user_role()) = 'user'
               AND NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid IN (owner_id, assigned_to)))
    WITH CHECK ((SELECT lab_current_user_role()) IN ('admin', 'manager')
                OR ((SELECT lab_current_user_role()) = 'user'
                    AND NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid IN (owner_id, assigned_to)));
DROP POLICY IF EXISTS activities_delete_by_role ON activities;
CREATE POLICY activities_delete_by_role ON activities AS RESTRICTIVE FOR DELETE TO app_user
    USING ((SELECT lab_current_user_role()) IN ('admin', 'manager')
           OR ((SELECT lab_current_user_role()) = 'user'
               AND NULLIF(current_setting('app.current_user_id', TRUE), '')::uuid IN (owner_id, assigned_to)));

-- tenant_users: every member reads the team directory; only a tenant admin changes it.
DROP POLICY IF EXISTS tenant_users_insert_by_admin ON tenant_users;
CREATE POLICY tenant_users_insert_by_admin ON tenant_users AS RESTRICTIVE FOR INSERT TO app_user
    WITH CHECK ((SELECT lab_current_user_role()) = 'admin');
DROP POLICY IF EXISTS tenant_users_update_by_admin ON tenant_users;
CREATE POLICY tenant_users_update_by_admin ON tenant_users AS RESTRICTIVE FOR UPDATE TO app_user
    USING ((SELECT lab_current_user_role()) = 'admin')
    WITH CHECK ((SELECT lab_current_user_role()) = 'admin');
DROP POLICY IF EXISTS tenant_users_delete_by_admin ON tenant_users;
CREATE POLICY tenant_users_delete_by_admin ON tenant_users AS RESTRICTIVE FOR DELETE TO app_user
    USING ((SELECT lab_current_user_role()) = 'admin');


-- -------------------------------------------------------------------------------------------------
-- Section 6: resolving a tenant at login -- the one narrow door through RLS
-- -------------------------------------------------------------------------------------------------
-- Before a tenant is set, app_user sees no tenants row at all, yet a login page must turn a slug
-- (acme.example.com) into a tenant id. lab_find_tenant() answers exactly that: id, slug and name of
-- one tenant, by slug or id, nothing else. SECURITY DEFINER runs it as the owner, so its
-- search_path is pinned (no temporary-table impersonation) and EXECUTE is granted explicitly.
CREATE OR REPLACE FUNCTION lab_find_tenant(key text)
RETURNS TABLE (id uuid, slug text, name text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_catalog, pg_temp
AS $$
    SELECT t.id, t.slug, t.name
      FROM tenants AS t
     WHERE (t.slug = key OR t.id::text = lower(key))
$$;
REVOKE ALL ON FUNCTION lab_find_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lab_find_tenant(text) TO app_user, app_readonly, app_admin;
COMMENT ON FUNCTION lab_find_tenant(text) IS
    'Login-time lookup of one tenant by slug or id (SECURITY DEFINER: the only read of tenants outside RLS)';

RESET lock_timeout;
RESET client_min_messages;
