-- =================================================================================================
-- 01-foundation-schema.sql -- the multi-tenant CRM's core tables
-- =================================================================================================
-- What:   tenants, tenant_users, contacts, leads and activities, with the keys, checks and indexes
--         a real CRM needs. Every tenant table carries tenant_id in its primary key, its unique keys
--         and its foreign keys, so a row can never point at another tenant's row (PITFALLS 13-15) and
--         the schema can be distributed by tenant_id (Citus) unchanged.
-- Needs:  PostgreSQL 15+ (18 recommended), core only (no extensions). Run as the administrator who
--         will own the schema (the embedded server's and docker's `postgres`).
-- Schema: the lab lives in `public`, where the unqualified names of every stage file land with the
--         default search_path; the functions that pin their search_path name it literally
--         (SET search_path = public, pg_catalog, pg_temp), and 02 grants USAGE on it.
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/01-foundation-schema.sql "$DSN"
--         or: labhelpers.stages.build(conn, through="01")
-- Idempotent: every statement is IF NOT EXISTS / OR REPLACE; running it twice changes nothing.
--
-- Table shapes (what a data generator must fill; * = NOT NULL without a default):
--   tenants       (id uuid PK, slug* unique, name*, plan free|starter|pro|enterprise, status
--                  active|trial|suspended|cancelled, settings jsonb, created_at, updated_at)
--   tenant_users  (tenant_id*, id, email* (lowercase), full_name*, role admin|manager|user|viewer,
--                  status active|invited|disabled, created_at, updated_at)
--                  PK (tenant_id, id), UNIQUE (tenant_id, email)
--   contacts      (tenant_id*, id, first_name, last_name, email, phone, company, title,
--                  owner_id -> tenant_users, custom_fields jsonb object, created_at, updated_at)
--                  PK (tenant_id, id), UNIQUE (tenant_id, email); first_name or last_name or email set
--   leads         (tenant_id*, id, contact_id -> contacts, owner_id -> tenant_users, title*,
--                  stage new|qualified|proposal|negotiation|won|lost, value numeric >= 0,
--                  currency 3 letters, expected_close_date, closed_at, custom_fields jsonb object,
--                  created_at, updated_at)
--                  custom_fields->'value', when present, must be the JSON number equal to value
--                  (the lesson's Test 2 sums custom_fields->>'value'): write both.
--   activities    (tenant_id*, id, type call|email|meeting|note|task|sms|demo, subject*, body,
--                  contact_id -> contacts, lead_id -> leads, owner_id -> tenant_users,
--                  assigned_to -> tenant_users, due_at, completed_at, custom_fields jsonb object,
--                  created_at, updated_at)
--                  05-partitioning.sql turns it into a table partitioned by month on created_at
--                  (and by hash of tenant_id); its primary key becomes (tenant_id, id, created_at).
--   All ids default to uuidv7(); created_at/updated_at default to now() (updated_at kept by a trigger).
--   Later stages add: custom_field_definitions (03, the registry every custom_fields key must be in;
--   call lab_define_default_custom_fields(tenant_id) after creating a tenant); on contacts the
--   generated columns cf_industry, cf_status, cf_priority (04: never write them, so always name the
--   columns in INSERT / COPY); the rollups lead_pipeline_hourly and contact_segment_counts, kept by
--   triggers on leads and contacts (course-rollups.sql, the course's addition to the lesson).
-- =================================================================================================

SET client_min_messages = warning;   -- keep "already exists, skipping" notices out of the output
SET lock_timeout = '10s';            -- never queue forever behind a long transaction (PITFALLS 25)


-- -------------------------------------------------------------------------------------------------
-- Section 1: ids -- uuidv7() on PostgreSQL 18, a compatible polyfill on 15-17
-- -------------------------------------------------------------------------------------------------
-- Why UUIDv7 (PITFALLS 23): a random v4 key lands anywhere in the primary-key btree, so every insert
-- touches a random leaf page (cache misses, page splits, a bloated and uncorrelated index). A v7 key
-- starts with a millisecond timestamp: new keys go to the right edge of the index, like a sequence,
-- yet stay globally unique (no coordination between tenants, nodes or shards).
-- PostgreSQL 18 has uuidv7() built in. On 15-17 we create a function of the same name in this schema
-- that builds the same layout from core gen_random_uuid() (48-bit ms timestamp, version 7, variant 2),
-- so every table below can say DEFAULT uuidv7() on every version.
DO $$
BEGIN
    IF to_regprocedure('uuidv7()') IS NULL THEN   -- neither built in (18+) nor polyfilled by a previous run
        EXECUTE $fn$
            CREATE OR REPLACE FUNCTION uuidv7() RETURNS uuid
            LANGUAGE sql VOLATILE PARALLEL SAFE
            AS $body$
                SELECT encode(
                           set_bit(set_bit(
                               OVERLAY(uuid_send(gen_random_uuid())
                                       PLACING SUBSTRING(int8send((EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                                       FROM 1 FOR 6),
                               52, 1), 53, 1),
                           'hex')::uuid
            $body$
        $fn$;
        EXECUTE $c$COMMENT ON FUNCTION uuidv7() IS
            'Polyfill for PostgreSQL < 18: time-ordered UUID version 7 built from gen_random_uuid()'$c$;
        RAISE WARNING 'PostgreSQL % has no uuidv7(): created the polyfill %.uuidv7() (same layout, built from gen_random_uuid())',
            current_setting('server_version'), current_schema();
    END IF;
END
$$;


-- -------------------------------------------------------------------------------------------------
-- Section 2: updated_at maintenance
-- -------------------------------------------------------------------------------------------------
-- One BEFORE UPDATE trigger function shared by every table: the application never has to remember.
CREATE OR REPLACE FUNCTION lab_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;


-- -------------------------------------------------------------------------------------------------
-- Section 3: tenants -- one row per customer company
-- -------------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS tenants (
    id          uuid        NOT NULL DEFAULT uuidv7(),
    slug        text        NOT NULL,
    name        text        NOT NULL,
    plan        text        NOT NULL DEFAULT 'free',
    status      text        NOT NULL DEFAULT 'active',
    settings    jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_pkey PRIMARY KEY (id),
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_slug_check CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    CONSTRAINT tenants_name_check CHECK (length(btrim(name)) > 0),
    CONSTRAINT tenants_plan_check CHECK (plan IN ('free', 'starter', 'pro', 'enterprise')),
    CONSTRAINT tenants_status_check CHECK (status IN ('active', 'trial', 'suspended', 'cancelled')),
    CONSTRAINT tenants_settings_check CHECK (jsonb_typeof(settings) = 'object')
);
COMMENT ON TABLE tenants IS 'One row per customer company (tenant). The app role sees only its own row.';

CREATE OR REPLACE TRIGGER tenants_touch_updated_at
    BEFORE UPDATE ON tenants FOR EACH ROW EXECUTE FUNCTION lab_touch_updated_at();


-- -------------------------------------------------------------------------------------------------
-- Section 4: tenant_users -- team members and their role inside the tenant
-- -------------------------------------------------------------------------------------------------
-- Roles: admin (manages users and custom fields), manager (changes every record of the tenant),
-- user (changes the records it owns or is assigned), viewer (reads only). 02 enforces them.
CREATE TABLE IF NOT EXISTS tenant_users (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL DEFAULT uuidv7(),
    email       text        NOT NULL,
    full_name   text        NOT NULL,
    role        text        NOT NULL DEFAULT 'user',
    status      text        NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_users_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT tenant_users_tenant_email_key UNIQUE (tenant_id, email),
    CONSTRAINT tenant_users_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_users_email_check CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' AND email = lower(email)),
    CONSTRAINT tenant_users_full_name_check CHECK (length(btrim(full_name)) > 0),
    CONSTRAINT tenant_users_role_check CHECK (role IN ('admin', 'manager', 'user', 'viewer')),
    CONSTRAINT tenant_users_status_check CHECK (status IN ('active', 'invited', 'disabled'))
);
COMMENT ON TABLE tenant_users IS 'Team members of a tenant; role admin|manager|user|viewer drives the write policies of 02.';

CREATE OR REPLACE TRIGGER tenant_users_touch_updated_at
    BEFORE UPDATE ON tenant_users FOR EACH ROW EXECUTE FUNCTION lab_touch_updated_at();


-- -------------------------------------------------------------------------------------------------
-- Section 5: contacts
-- -------------------------------------------------------------------------------------------------
-- custom_fields is here from the start so the table shape is stable; 03 adds the per-tenant field
-- registry that validates it, 04 its indexes.
CREATE TABLE IF NOT EXISTS contacts (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL DEFAULT uuidv7(),
    first_name    text,
    last_name     text,
    email         text,
    phone         text,
    company       text,
    title         text,
    owner_id      uuid,
    custom_fields jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contacts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_tenant_email_key UNIQUE (tenant_id, email),
    CONSTRAINT contacts_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT contacts_owner_fkey FOREIGN KEY (tenant_id, owner_id)
        REFERENCES tenant_users (tenant_id, id) ON DELETE SET NULL (owner_id),
    CONSTRAINT contacts_name_or_email_check CHECK (COALESCE(first_name, last_name, email) IS NOT NULL),
    CONSTRAINT contacts_email_check CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' AND email = lower(email)),
    CONSTRAINT contacts_phone_check CHECK (phone ~ '^\+?[0-9 ().-]{4,32}$'),
    CONSTRAINT contacts_custom_fields_check CHECK (jsonb_typeof(custom_fields) = 'object')
);
COMMENT ON TABLE contacts IS 'People a tenant sells to. custom_fields: per-tenant fields, validated against custom_field_definitions (03).';

CREATE OR REPLACE TRIGGER contacts_touch_updated_at
    BEFORE UPDATE ON contacts FOR EACH ROW EXECUTE FUNCTION lab_touch_updated_at();


-- -------------------------------------------------------------------------------------------------
-- Section 6: leads -- sales opportunities
-- -------------------------------------------------------------------------------------------------
-- value is a core numeric column (sums, sorts and checks need a real type). The lesson's Test 2 sums
-- custom_fields->>'value', so the custom field mirrors it; a CHECK keeps the two from drifting.
CREATE TABLE IF NOT EXISTS leads (
    tenant_id           uuid          NOT NULL,
    id                  uuid          NOT NULL DEFAULT uuidv7(),
    contact_id          uuid,
    owner_id            uuid,
    title               text          NOT NULL,
    stage               text          NOT NULL DEFAULT 'new',
    value               numeric(14,2) NOT NULL DEFAULT 0,
    currency            char(3)       NOT NULL DEFAULT 'USD',
    expected_close_date date,
    closed_at           timestamptz,
    custom_fields       jsonb         NOT NULL DEFAULT '{}',
    created_at          timestamptz   NOT NULL DEFAULT now(),
    updated_at          timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT leads_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT leads_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT leads_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT leads_owner_fkey FOREIGN KEY (tenant_id, owner_id)
        REFERENCES tenant_users (tenant_id, id) ON DELETE SET NULL (owner_id),
    CONSTRAINT leads_title_check CHECK (length(btrim(title)) > 0),
    CONSTRAINT leads_stage_check CHECK (stage IN ('new', 'qualified', 'proposal', 'negotiation', 'won', 'lost')),
    CONSTRAINT leads_value_check CHECK (value >= 0),
    CONSTRAINT leads_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT leads_closed_check CHECK (closed_at IS NULL OR stage IN ('won', 'lost')),
    CONSTRAINT leads_custom_fields_check CHECK (jsonb_typeof(custom_fields) = 'object'),
    CONSTRAINT leads_custom_value_check CHECK (
        NOT (custom_fields ? 'value')
        OR (jsonb_typeof(custom_fields -> 'value') = 'number' AND (custom_fields -> 'value')::numeric = value))
);
COMMENT ON TABLE leads IS 'Sales opportunities. custom_fields->''value'' mirrors value (checked) for the lesson''s Test 2.';

CREATE OR REPLACE TRIGGER leads_touch_updated_at
    BEFORE UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION lab_touch_updated_at();


-- -------------------------------------------------------------------------------------------------
-- Section 7: activities -- calls, emails, meetings, notes, tasks
-- -------------------------------------------------------------------------------------------------
-- A plain table here; 05-partitioning.sql converts it (in one transaction, keeping every row) to a
-- table partitioned by month on created_at, whose primary key must then include created_at
-- (PITFALLS 18). No other table references activities, so that change breaks no foreign key.
CREATE TABLE IF NOT EXISTS activities (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL DEFAULT uuidv7(),
    type          text        NOT NULL,
    subject       text        NOT NULL,
    body          text,
    contact_id    uuid,
    lead_id       uuid,
    owner_id      uuid,
    assigned_to   uuid,
    due_at        timestamptz,
    completed_at  timestamptz,
    custom_fields jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT activities_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT activities_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT activities_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT activities_lead_fkey FOREIGN KEY (tenant_id, lead_id)
        REFERENCES leads (tenant_id, id) ON DELETE SET NULL (lead_id),
    CONSTRAINT activities_owner_fkey FOREIGN KEY (tenant_id, owner_id)
        REFERENCES tenant_users (tenant_id, id) ON DELETE SET NULL (owner_id),
    CONSTRAINT activities_assigned_to_fkey FOREIGN KEY (tenant_id, assigned_to)
        REFERENCES tenant_users (tenant_id, id) ON DELETE SET NULL (assigned_to),
    CONSTRAINT activities_type_check CHECK (type IN ('call', 'email', 'meeting', 'note', 'task', 'sms', 'demo')),
    CONSTRAINT activities_subject_check CHECK (length(btrim(subject)) > 0),
    CONSTRAINT activities_due_check CHECK (due_at IS NULL OR type IN ('task', 'meeting', 'call', 'demo')),
    CONSTRAINT activities_custom_fields_check CHECK (jsonb_typeof(custom_fields) = 'object')
);
COMMENT ON TABLE activities IS 'Interactions with contacts and leads; partitioned by month (and tenant hash) in 05.';

CREATE OR REPLACE TRIGGER activities_touch_updated_at
    BEFORE UPDATE ON activities FOR EACH ROW EXECUTE FUNCTION lab_touch_updated_at();


-- -------------------------------------------------------------------------------------------------
-- Section 8: indexes for the lesson's queries -- tenant_id leads every one
-- -------------------------------------------------------------------------------------------------
-- Every query runs inside one tenant, so tenant_id comes first: the RLS predicate tenant_id = <uuid>
-- becomes the index's leading condition, and one tenant's rows are contiguous in the index.
-- Test 2 (lead pipeline, last 30 days) and Test 3 (activity feed, last 7 days, newest first):
-- INCLUDE (stage, value): the pipeline sums (GROUP BY stage, SUM(value)) of a month of one tenant's
-- leads become an index-only scan, without visiting the table.
CREATE INDEX IF NOT EXISTS leads_tenant_created_idx ON leads (tenant_id, created_at) INCLUDE (stage, value);
CREATE INDEX IF NOT EXISTS leads_tenant_stage_idx ON leads (tenant_id, stage);
CREATE INDEX IF NOT EXISTS activities_tenant_created_idx ON activities (tenant_id, created_at DESC);
CREATE INDEX IF NOT EXISTS contacts_tenant_created_idx ON contacts (tenant_id, created_at);

-- Foreign keys are not indexed automatically; without these, deleting a contact or a user scans
-- the referencing table, and "leads of this contact" has no access path.
CREATE INDEX IF NOT EXISTS contacts_tenant_owner_idx ON contacts (tenant_id, owner_id);
CREATE INDEX IF NOT EXISTS leads_tenant_contact_idx ON leads (tenant_id, contact_id);
CREATE INDEX IF NOT EXISTS leads_tenant_owner_idx ON leads (tenant_id, owner_id);
CREATE INDEX IF NOT EXISTS activities_tenant_contact_idx ON activities (tenant_id, contact_id);
CREATE INDEX IF NOT EXISTS activities_tenant_lead_idx ON activities (tenant_id, lead_id);
CREATE INDEX IF NOT EXISTS activities_tenant_owner_idx ON activities (tenant_id, owner_id);
CREATE INDEX IF NOT EXISTS activities_tenant_assigned_to_idx ON activities (tenant_id, assigned_to);

RESET lock_timeout;
RESET client_min_messages;
