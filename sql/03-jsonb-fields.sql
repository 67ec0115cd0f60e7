-- =================================================================================================
-- 03-jsonb-fields.sql -- custom fields per tenant: JSONB columns, a field registry, validation
-- =================================================================================================
-- What:   custom_fields jsonb on contacts, leads and activities (01 already creates them; this file
--         makes sure), a per-tenant registry of field definitions (custom_field_definitions), a
--         set-based validation of every written custom_fields value against that registry, and
--         lab_define_default_custom_fields(tenant) which defines 100+ fields per entity.
-- Needs:  01-foundation-schema.sql and 02-rls-policies.sql (the app roles, lab_current_user_role()).
--         Run as the owner of the tables.
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/03-jsonb-fields.sql "$DSN"
--         or: labhelpers.stages.build(conn, through="03")
-- Idempotent: IF NOT EXISTS / OR REPLACE throughout.
--
-- Writing custom fields (the contract for the application and for data generators):
--   * custom_fields is a JSON object; each key must be defined for the tenant and entity
--     (contact | lead | activity) in custom_field_definitions, and its value must match the type:
--         text -> JSON string        number -> JSON number     boolean -> JSON true/false
--         date -> "YYYY-MM-DD"       enum   -> one of the definition's options (a JSON string)
--     JSON null means "no value" and is always accepted unless the field is required.
--   * A violation raises SQLSTATE 23514 (check_violation, psycopg.errors.CheckViolation) naming the
--     key, the entity, the row and the problem; the whole statement is rolled back.
--   * The check runs once per STATEMENT over all the rows it wrote (AFTER ... FOR EACH STATEMENT with
--     a transition table), as one hash join: a multi-row INSERT or COPY of a million rows costs one
--     query, not a million.
--   * Bulk loaders that validate their data themselves may skip the check inside their transaction:
--         SET LOCAL lab.custom_fields_validation = 'off';
--     It is honoured only for a role with the privileges of the table's owner (the administrator);
--     for anyone else (app_user, app_admin...) the statement fails with SQLSTATE 42501, so skipping
--     can never be used to smuggle undefined fields in. Afterwards, audit what was loaded with
--         SELECT * FROM lab_custom_field_violations('contacts');   -- zero rows expected
-- =================================================================================================

SET client_min_messages = warning;
SET lock_timeout = '10s';


-- -------------------------------------------------------------------------------------------------
-- Section 1: the custom_fields columns
-- -------------------------------------------------------------------------------------------------
-- ADD COLUMN with a constant default is a catalog-only change since PostgreSQL 11 (no table rewrite).
ALTER TABLE contacts   ADD COLUMN IF NOT EXISTS custom_fields jsonb NOT NULL DEFAULT '{}';
ALTER TABLE leads      ADD COLUMN IF NOT EXISTS custom_fields jsonb NOT NULL DEFAULT '{}';
ALTER TABLE activities ADD COLUMN IF NOT EXISTS custom_fields jsonb NOT NULL DEFAULT '{}';


-- -------------------------------------------------------------------------------------------------
-- Section 2: the registry of field definitions, one set per tenant and entity
-- -------------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS custom_field_definitions (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL DEFAULT uuidv7(),
    entity      text        NOT NULL,
    key         text        NOT NULL,
    label       text        NOT NULL,
    data_type   text        NOT NULL,
    options     jsonb,
    required    boolean     NOT NULL DEFAULT FALSE,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT custom_field_definitions_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT custom_field_definitions_tenant_entity_key_key UNIQUE (tenant_id, entity, key),
    CONSTRAINT custom_field_definitions_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT custom_field_definitions_entity_check CHECK (entity IN ('contact', 'lead', 'activity')),
    CONSTRAINT custom_field_definitions_key_check CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT custom_field_definitions_data_type_check CHECK (data_type IN ('text', 'number', 'boolean', 'date', 'enum')),
    CONSTRAINT custom_field_definitions_options_check CHECK (
        CASE WHEN data_type = 'enum'
             THEN jsonb_typeof(options) = 'array' AND jsonb_array_length(options) > 0
             ELSE options IS NULL
        END)
);
COMMENT ON TABLE custom_field_definitions IS
    'Per-tenant custom field registry: entity (contact|lead|activity), key, data_type, enum options, required';

CREATE OR REPLACE TRIGGER custom_field_definitions_touch_updated_at
    BEFORE UPDATE ON custom_field_definitions FOR EACH ROW EXECUTE FUNCTION lab_touch_updated_at();

-- A tenant table like the others: privileges, RLS enabled+forced, the fail-closed tenant policy
-- (the same four statements as for every table of 02, section 4), and only a tenant admin may change
-- the registry through app_user.
GRANT SELECT, INSERT, UPDATE, DELETE ON custom_field_definitions TO app_user, app_admin;
GRANT SELECT ON custom_field_definitions TO app_readonly;
ALTER TABLE custom_field_definitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE custom_field_definitions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS custom_field_definitions_tenant_isolation ON custom_field_definitions;
CREATE POLICY custom_field_definitions_tenant_isolation ON custom_field_definitions AS PERMISSIVE FOR ALL TO PUBLIC
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

DROP POLICY IF EXISTS custom_field_definitions_insert_by_admin ON custom_field_definitions;
CREATE POLICY custom_field_definitions_insert_by_admin ON custom_field_definitions AS RESTRICTIVE FOR INSERT TO app_user
    WITH CHECK ((SELECT lab_current_user_role()) = 'admin');
DROP POLICY IF EXISTS custom_field_definitions_update_by_admin ON custom_field_definitions;
CREATE POLICY custom_field_definitions_update_by_admin ON custom_field_definitions AS RESTRICTIVE FOR UPDATE TO app_user
    USING ((SELECT lab_current_user_role()) = 'admin')
    WITH CHECK ((SELECT lab_current_user_role()) = 'admin');
DROP POLICY IF EXISTS custom_field_definitions_delete_by_admin ON custom_field_definitions;
CREATE POLICY custom_field_definitions_delete_by_admin ON custom_field_definitions AS RESTRICTIVE FOR DELETE TO app_user
    USING ((SELECT lab_current_user_role()) = 'admin');


-- -------------------------------------------------------------------------------------------------
-- Section 3: what is wrong with a value?
-- -------------------------------------------------------------------------------------------------
-- lab_custom_field_type_problem(type, options, value): NULL when the JSON value fits the field's
-- type, else a short description. A single CASE expression, IMMUTABLE: the planner inlines it.
CREATE OR REPLACE FUNCTION lab_custom_field_type_problem(p_data_type text, p_options jsonb, p_value jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN jsonb_typeof(p_value) = 'null' THEN NULL
               WHEN p_data_type = 'text' AND jsonb_typeof(p_value) <> 'string' THEN
                   'must be a JSON string, got ' || p_value::text
               WHEN p_data_type = 'number' AND jsonb_typeof(p_value) <> 'number' THEN
                   'must be a JSON number, got ' || p_value::text
               WHEN p_data_type = 'boolean' AND jsonb_typeof(p_value) <> 'boolean' THEN
                   'must be true or false, got ' || p_value::text
               WHEN p_data_type = 'date'
                    AND (jsonb_typeof(p_value) <> 'string'
                         OR (p_value #>> '{}') !~ '^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$') THEN
                   'must be a date "YYYY-MM-DD", got ' || p_value::text
               WHEN p_data_type = 'enum'
                    AND (jsonb_typeof(p_value) <> 'string' OR NOT p_options @> p_value) THEN
                   'must be one of ' || p_options::text || ', got ' || p_value::text
           END
$$;

-- lab_custom_field_problems(tenant, entity, custom_fields): one row per problem of one value (none
-- when it is valid): undefined keys, wrong types, missing required fields. For application code
-- and tests; the trigger below checks whole statements set-based instead. It reads the registry
-- with the caller's rights, hence under RLS: an app role sees only its own tenant's definitions.
CREATE OR REPLACE FUNCTION lab_custom_field_problems(p_tenant_id uuid, p_entity text, p_fields jsonb)
RETURNS TABLE (field_key text, problem text)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT e.key,
           CASE WHEN d.key IS NULL
                THEN 'is not defined for ' || p_entity || ' in this tenant (add it to custom_field_definitions)'
                ELSE lab_custom_field_type_problem(d.data_type, d.options, e.value)
           END
      FROM jsonb_each(p_fields) AS e
      LEFT JOIN custom_field_definitions AS d
             ON d.tenant_id = p_tenant_id AND d.entity = p_entity AND d.key = e.key
     WHERE jsonb_typeof(e.value) <> 'null'
       AND (d.key IS NULL OR lab_custom_field_type_problem(d.data_type, d.options, e.value) IS NOT NULL)
    UNION ALL
    SELECT r.key, 'is required for ' || p_entity
      FROM custom_field_definitions AS r
     WHERE r.tenant_id = p_tenant_id AND r.entity = p_entity AND r.required
       AND jsonb_typeof(COALESCE(p_fields -> r.key, 'null')) = 'null'
$$;
COMMENT ON FUNCTION lab_custom_field_problems(uuid, text, jsonb) IS
    'Problems of one custom_fields value against the tenant''s registry: (field_key, problem), none when valid';


-- -------------------------------------------------------------------------------------------------
-- Section 4: the validation trigger -- once per statement, over all the rows it wrote
-- -------------------------------------------------------------------------------------------------
-- TG_ARGV[0] is the entity. The transition table new_rows holds every row the statement inserted or
-- updated; the check is two set-based queries over it (each key of each row hash-joined to the
-- registry; then required fields), so a bulk statement pays one join, not a query per row.
-- Two triggers per table (one for INSERT, one for UPDATE): PostgreSQL allows a transition table
-- only on a single-event trigger. The search_path is pinned to the lab's schema (public, pg_temp
-- last), so a temporary table named custom_field_definitions cannot stand in for the registry.
CREATE OR REPLACE FUNCTION lab_validate_custom_fields() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_catalog, pg_temp
AS $$
DECLARE
    v_entity text := TG_ARGV[0];
    bad      record;
BEGIN
    IF current_setting('lab.custom_fields_validation', TRUE) = 'off' THEN
        IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
            RETURN NULL;   -- a trusted bulk load; audit it with lab_custom_field_violations()
        END IF;
        RAISE EXCEPTION 'only the owner of % may set lab.custom_fields_validation = off', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    SELECT n.tenant_id, n.id, e.key AS field_key,
           CASE WHEN d.key IS NULL
                THEN 'is not defined for ' || v_entity || ' in this tenant (add it to custom_field_definitions)'
                ELSE lab_custom_field_type_problem(d.data_type, d.options, e.value)
           END AS problem
      INTO bad
      FROM new_rows AS n
     CROSS JOIN LATERAL jsonb_each(n.custom_fields) AS e
      LEFT JOIN custom_field_definitions AS d
             ON d.tenant_id = n.tenant_id AND d.entity = v_entity AND d.key = e.key
     WHERE jsonb_typeof(e.value) <> 'null'
       AND (d.key IS NULL OR lab_custom_field_type_problem(d.data_type, d.options, e.value) IS NOT NULL);
    -- (No LIMIT 1: INTO stops at the first row anyway, and LIMIT would make the planner
    -- bet on an early hit and probe the registry's index once per key: 6x slower.)
    IF NOT FOUND THEN
        SELECT n.tenant_id, n.id, r.key AS field_key, 'is required for ' || v_entity AS problem
          INTO bad
          FROM custom_field_definitions AS r
          JOIN new_rows AS n ON n.tenant_id = r.tenant_id
         WHERE r.entity = v_entity AND r.required
           AND jsonb_typeof(COALESCE(n.custom_fields -> r.key, 'null')) = 'null';
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'custom field "%" of % %: %', bad.field_key, v_entity, bad.id, bad.problem
            USING ERRCODE = 'check_violation',
                  TABLE = TG_TABLE_NAME,
                  COLUMN = 'custom_fields',
                  CONSTRAINT = TG_TABLE_NAME || '_custom_fields_registry',
                  DETAIL = format('tenant %s, %s %s, key %s', bad.tenant_id, v_entity, bad.id, bad.field_key),
                  HINT = 'Define the field for this tenant in custom_field_definitions, or fix the value''s type.';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION lab_validate_custom_fields() IS
    'Statement-level trigger: every custom_fields written must match custom_field_definitions (SQLSTATE 23514)';

CREATE OR REPLACE TRIGGER contacts_custom_fields_validate_insert
    AFTER INSERT ON contacts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_validate_custom_fields('contact');
CREATE OR REPLACE TRIGGER contacts_custom_fields_validate_update
    AFTER UPDATE ON contacts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_validate_custom_fields('contact');
CREATE OR REPLACE TRIGGER leads_custom_fields_validate_insert
    AFTER INSERT ON leads REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_validate_custom_fields('lead');
CREATE OR REPLACE TRIGGER leads_custom_fields_validate_update
    AFTER UPDATE ON leads REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_validate_custom_fields('lead');
CREATE OR REPLACE TRIGGER activities_custom_fields_validate_insert
    AFTER INSERT ON activities REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_validate_custom_fields('activity');
CREATE OR REPLACE TRIGGER activities_custom_fields_validate_update
    AFTER UPDATE ON activities REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_validate_custom_fields('activity');


-- -------------------------------------------------------------------------------------------------
-- Section 5: auditing a whole table (after a bulk load that skipped the trigger)
-- -------------------------------------------------------------------------------------------------
-- lab_custom_field_violations('contacts') lists every stored problem, set-based like the trigger.
-- Run it as the administrator to check all tenants (an app role sees only the current tenant).
CREATE OR REPLACE FUNCTION lab_custom_field_violations(tbl regclass)
RETURNS TABLE (tenant_id uuid, id uuid, field_key text, problem text)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_entity text := CASE split_part(tbl::text, '.', -1)
                         WHEN 'contacts' THEN 'contact' WHEN 'leads' THEN 'lead' WHEN 'activities' THEN 'activity'
                     END;
BEGIN
    IF v_entity IS NULL THEN
        RAISE EXCEPTION '% has no registered custom fields (expected contacts, leads or activities)', tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY EXECUTE format(
        $q$SELECT n.tenant_id, n.id, e.key,
                  CASE WHEN d.key IS NULL THEN %1$L
                       ELSE lab_custom_field_type_problem(d.data_type, d.options, e.value) END
             FROM %2$s AS n
            CROSS JOIN LATERAL jsonb_each(n.custom_fields) AS e
             LEFT JOIN custom_field_definitions AS d
                    ON d.tenant_id = n.tenant_id AND d.entity = %3$L AND d.key = e.key
            WHERE jsonb_typeof(e.value) <> 'null'
              AND (d.key IS NULL OR lab_custom_field_type_problem(d.data_type, d.options, e.value) IS NOT NULL)
           UNION ALL
           SELECT n.tenant_id, n.id, r.key, %4$L
             FROM custom_field_definitions AS r
             JOIN %2$s AS n ON n.tenant_id = r.tenant_id
            WHERE r.entity = %3$L AND r.required
              AND jsonb_typeof(COALESCE(n.custom_fields -> r.key, 'null')) = 'null'$q$,
        'is not defined for ' || v_entity || ' in this tenant', tbl, v_entity, 'is required for ' || v_entity);
END
$$;
COMMENT ON FUNCTION lab_custom_field_violations(regclass) IS
    'Every stored custom field problem of contacts, leads or activities (zero rows expected)';


-- -------------------------------------------------------------------------------------------------
-- Section 6: the default field set -- 100+ definitions per entity for a tenant
-- -------------------------------------------------------------------------------------------------
-- lab_define_default_custom_fields(tenant) defines, for contact, lead and activity, the hot fields
-- the lesson queries (contacts: industry with 'tech', status with 'active', priority with 'high';
-- leads: value as a number) plus 100 sparse fields cf_001 .. cf_100 whose types cycle through
-- text, number, boolean, date and enum. Returns the number of definitions it added (0 on a re-run).
-- It writes with the caller's rights: the administrator, or app_admin with app.current_tenant set.
CREATE OR REPLACE FUNCTION lab_define_default_custom_fields(p_tenant_id uuid) RETURNS integer
LANGUAGE sql
AS $$
    WITH hot (entity, key, label, data_type, options) AS (
        VALUES
        ('contact',  'industry',         'Industry',          'enum',
            '["tech","finance","healthcare","retail","manufacturing","education","media","energy"]'::jsonb),
        ('contact',  'status',           'Status',            'enum',    '["active","inactive","prospect","churned"]'),
        ('contact',  'priority',         'Priority',          'enum',    '["low","medium","high","urgent"]'),
        ('contact',  'region',           'Region',            'enum',    '["north_america","emea","apac","latam"]'),
        ('contact',  'source',           'Source',            'enum',    '["web","referral","event","outbound","partner","ads"]'),
        ('contact',  'score',            'Lead score',        'number',  NULL),
        ('contact',  'vip',              'VIP',               'boolean', NULL),
        ('contact',  'employees',        'Employees',         'number',  NULL),
        ('contact',  'annual_revenue',   'Annual revenue',    'number',  NULL),
        ('contact',  'birthday',         'Birthday',          'date',    NULL),
        ('contact',  'linkedin_url',     'LinkedIn URL',      'text',    NULL),
        ('lead',     'value',            'Deal value',        'number',  NULL),
        ('lead',     'industry',         'Industry',          'enum',
            '["tech","finance","healthcare","retail","manufacturing","education","media","energy"]'),
        ('lead',     'priority',         'Priority',          'enum',    '["low","medium","high","urgent"]'),
        ('lead',     'region',           'Region',            'enum',    '["north_america","emea","apac","latam"]'),
        ('lead',     'source',           'Source',            'enum',    '["web","referral","event","outbound","partner","ads"]'),
        ('lead',     'probability',      'Win probability %', 'number',  NULL),
        ('lead',     'product_interest', 'Product interest',  'enum',    '["starter","pro","enterprise","services"]'),
        ('lead',     'budget_approved',  'Budget approved',   'boolean', NULL),
        ('lead',     'decision_date',    'Decision date',     'date',    NULL),
        ('lead',     'competitor',       'Competitor',        'text',    NULL),
        ('activity', 'priority',         'Priority',          'enum',    '["low","medium","high","urgent"]'),
        ('activity', 'outcome',          'Outcome',           'enum',
            '["connected","left_voicemail","no_answer","completed","rescheduled","cancelled"]'),
        ('activity', 'channel',          'Channel',           'enum',    '["phone","email","video","in_person","chat"]'),
        ('activity', 'sentiment',        'Sentiment',         'enum',    '["positive","neutral","negative"]'),
        ('activity', 'duration_minutes', 'Duration (min)',    'number',  NULL),
        ('activity', 'region',           'Region',            'enum',    '["north_america","emea","apac","latam"]'),
        ('activity', 'follow_up',        'Follow-up needed',  'boolean', NULL),
        ('activity', 'follow_up_date',   'Follow-up date',    'date',    NULL)
    ),
    sparse AS (
        SELECT e.entity,
               format('cf_%s', lpad(n::text, 3, '0')) AS key,
               format('Custom field %s', n) AS label,
               (ARRAY['text', 'number', 'boolean', 'date', 'enum'])[1 + (n - 1) % 5] AS data_type,
               CASE WHEN (n - 1) % 5 = 4 THEN '["opt_a","opt_b","opt_c","opt_d","opt_e"]'::jsonb END AS options
          FROM unnest(ARRAY['contact', 'lead', 'activity']) AS e (entity)
         CROSS JOIN generate_series(1, 100) AS n
    ),
    added AS (
        INSERT INTO custom_field_definitions (tenant_id, entity, key, label, data_type, options)
        SELECT p_tenant_id, entity, key, label, data_type, options FROM hot
        UNION ALL
        SELECT p_tenant_id, entity, key, label, data_type, options FROM sparse
        ON CONFLICT (tenant_id, entity, key) DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer FROM added
$$;
COMMENT ON FUNCTION lab_define_default_custom_fields(uuid) IS
    'Define the hot custom fields and cf_001..cf_100 for contact, lead and activity of a tenant; returns rows added';

RESET lock_timeout;
RESET client_min_messages;
