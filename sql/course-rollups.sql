-- =================================================================================================
-- course-rollups.sql -- the course's rollups: Test 2 and Scenario 2 answered at any scale
-- =================================================================================================
-- NOT PART OF THE LESSON: the lesson's stage files are 01..05, each typed as `\i` in its psql steps.
-- This file is the course's addition beyond them, for the lesson's targets at the `large` and `xl`
-- scales (labhelpers bench: Test 2 "rollup" and Scenario 2 "rollup"; notebook 05, section 4). The
-- lesson's own queries never read these tables and work without them.
-- What:   two tables of pre-aggregated counts, each kept exact by statement-level triggers, with a
--         rebuild function (for a load that fired no trigger) and a drift audit:
--             lead_pipeline_hourly     leads per tenant, UTC hour of created_at and stage (Test 2)
--             contact_segment_counts   contacts per tenant, cf_status and cf_priority (Scenario 2)
-- Needs:  01..04: leads, contacts, the app roles of 02, and 04's generated columns cf_status and
--         cf_priority. 05 and the seed may come before or after. Run as the owner of the tables.
-- Run:    psql -v ON_ERROR_STOP=1 -f sql/course-rollups.sql "$DSN"    (in psql from sql/: \i course-rollups.sql)
--         or: labhelpers.stages.build(conn, through="rollups")  (`labhelpers build` runs it after 05)
-- Idempotent: IF NOT EXISTS / OR REPLACE; policies are dropped and re-created with the same
--         definition; on a database that already has leads or contacts, a rollup is rebuilt only
--         when it disagrees with them. Running it twice changes nothing.
-- Timings: README, Performance.
-- =================================================================================================

SET client_min_messages = warning;
SET lock_timeout = '10s';


-- -------------------------------------------------------------------------------------------------
-- Section 1: the lead pipeline rollup -- Test 2 at any scale
-- -------------------------------------------------------------------------------------------------
-- Test 2 ("lead pipeline, last 30 days, by stage") is a dashboard query: read on every page view,
-- over a window that grows with the tenant. The covering index of 01 (leads_tenant_created_idx)
-- makes it an index-only scan, but that still aggregates one index entry per lead: about 32,000 for
-- the largest tenant of the `large` scale, twice that at `xl`. lead_pipeline_hourly keeps the answer
-- pre-aggregated per tenant, hour and stage, so the query reads at most 30 x 24 x 6 small rows
-- whatever the tenant's size.
--   * Hours, not days, and in UTC: local midnight (CURRENT_DATE in any time zone with a whole-hour
--     offset) is an hour boundary, so "since midnight 30 days ago" is a sum of whole buckets and the
--     rollup gives exactly the answer of the query over leads.
--   * Kept by statement-level triggers with transition tables: one aggregate per statement, so a bulk
--     insert of 250,000 leads costs one GROUP BY, not 250,000 row triggers. INSERT adds, DELETE
--     subtracts, UPDATE does both (a lead moving from 'proposal' to 'won' moves its count and value);
--     a bucket left with no leads is deleted, so the rollup never shows a stage the leads do not.
--   * Not a materialized view: a materialized view runs as its owner and has no row-level security,
--     so it would show every tenant's pipeline to every tenant (PITFALLS 12), and it is stale between
--     refreshes. This is a table, secured like every tenant table (PITFALLS 24: derived tables need
--     RLS too), that the application roles may read but never write.
--   * The maintenance function is SECURITY DEFINER (the app roles have no write privilege on the
--     rollup) with a pinned search_path; it only ever writes what the transition tables hold, i.e.
--     rows that already passed the leads policies.
--   * It sums the column value. Test 2 sums custom_fields->>'value', which mirrors it (leads_custom_
--     value_check): the two agree as long as writers write both, as every writer of this lab does; a
--     lead without the custom field counts in the rollup and not in the verbatim query.
--   * The cost: every write of a lead also updates one rollup row per (hour, stage) it touches, and
--     two transactions adding leads to the same tenant, hour and stage take turns on that row (the
--     second waits for the first to commit). Right for a CRM's lead rate; a firehose of events
--     would batch its writes instead.
--   * On Citus, triggers on distributed tables need citus.enable_unsafe_triggers (the rollup is
--     keyed by tenant_id, so it is co-located with leads and each trigger stays on one shard).
CREATE TABLE IF NOT EXISTS lead_pipeline_hourly (
    tenant_id   uuid        NOT NULL,
    hour        timestamptz NOT NULL,
    stage       text        NOT NULL,
    lead_count  integer     NOT NULL,
    total_value numeric     NOT NULL,
    CONSTRAINT lead_pipeline_hourly_pkey PRIMARY KEY (tenant_id, hour, stage),
    CONSTRAINT lead_pipeline_hourly_hour_check CHECK (hour = date_trunc('hour', hour, 'UTC'))
    -- No CHECK (lead_count >= 0): a CHECK is tested on the row INSERT proposes, before ON CONFLICT
    -- turns it into an update, so it would refuse every negative delta. lab_lead_pipeline_drift()
    -- below is the audit instead.
) WITH (fillfactor = 80);   -- room for HOT updates: the counters change, the key never does
COMMENT ON TABLE lead_pipeline_hourly IS
    'Leads per tenant, UTC hour of created_at and stage (count, sum of value); kept by triggers on leads';

-- Derived from leads by the triggers below: readable by the app roles, never writable.
GRANT SELECT ON lead_pipeline_hourly TO app_user, app_readonly, app_admin;
-- Derived rows are tenant rows too (PITFALLS 24): the same four statements as every tenant table
-- (02, section 4).
ALTER TABLE lead_pipeline_hourly ENABLE ROW LEVEL SECURITY;
ALTER TABLE lead_pipeline_hourly FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS lead_pipeline_hourly_tenant_isolation ON lead_pipeline_hourly;
CREATE POLICY lead_pipeline_hourly_tenant_isolation ON lead_pipeline_hourly AS PERMISSIVE FOR ALL TO PUBLIC
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

-- One function for the four triggers below. A trigger sees only the transition tables of its own
-- event (new_rows for INSERT, old_rows for DELETE, both for UPDATE), hence one statement per event;
-- PL/pgSQL plans a statement when it first runs it, so a branch never taken never needs its table.
-- Each statement adds the net change of each bucket, in key order: two statements that share
-- buckets lock them in the same order (they wait, never deadlock).
CREATE OR REPLACE FUNCTION lab_maintain_lead_pipeline() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE lead_pipeline_hourly;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO lead_pipeline_hourly AS r (tenant_id, hour, stage, lead_count, total_value)
        SELECT tenant_id, date_trunc('hour', created_at, 'UTC'), stage, count(*), sum(value)
          FROM new_rows
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, hour, stage) DO UPDATE
           SET lead_count = r.lead_count + EXCLUDED.lead_count,
               total_value = r.total_value + EXCLUDED.total_value;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO lead_pipeline_hourly AS r (tenant_id, hour, stage, lead_count, total_value)
        SELECT tenant_id, date_trunc('hour', created_at, 'UTC'), stage, -count(*), -sum(value)
          FROM old_rows
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, hour, stage) DO UPDATE
           SET lead_count = r.lead_count + EXCLUDED.lead_count,
               total_value = r.total_value + EXCLUDED.total_value;
    ELSE   -- UPDATE: each new version adds (n = +1), each old one subtracts (n = -1)
        INSERT INTO lead_pipeline_hourly AS r (tenant_id, hour, stage, lead_count, total_value)
        SELECT tenant_id, date_trunc('hour', created_at, 'UTC'), stage, sum(n), sum(n * value)
          FROM (SELECT tenant_id, created_at, stage, value, 1 AS n FROM new_rows
                UNION ALL
                SELECT tenant_id, created_at, stage, value, -1 FROM old_rows) AS changed
         GROUP BY 1, 2, 3
        HAVING sum(n) <> 0 OR sum(n * value) <> 0   -- an unchanged bucket is not touched
         ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, hour, stage) DO UPDATE
           SET lead_count = r.lead_count + EXCLUDED.lead_count,
               total_value = r.total_value + EXCLUDED.total_value;
    END IF;
    -- Then drop the buckets left without leads, so the rollup never lists a stage leads do not.
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM lead_pipeline_hourly AS r
         USING (SELECT DISTINCT tenant_id, date_trunc('hour', created_at, 'UTC') AS hour, stage
                  FROM old_rows) AS o
         WHERE (r.tenant_id, r.hour, r.stage) = (o.tenant_id, o.hour, o.stage)
           AND r.lead_count = 0;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION lab_maintain_lead_pipeline() FROM PUBLIC;
COMMENT ON FUNCTION lab_maintain_lead_pipeline() IS
    'Statement-level trigger on leads: applies the net change of each statement to lead_pipeline_hourly';

-- A transition table belongs to a single-event trigger, hence one trigger per event.
CREATE OR REPLACE TRIGGER leads_pipeline_insert
    AFTER INSERT ON leads REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_lead_pipeline();
CREATE OR REPLACE TRIGGER leads_pipeline_update
    AFTER UPDATE ON leads REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_lead_pipeline();
CREATE OR REPLACE TRIGGER leads_pipeline_delete
    AFTER DELETE ON leads REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_lead_pipeline();
CREATE OR REPLACE TRIGGER leads_pipeline_truncate
    AFTER TRUNCATE ON leads
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_lead_pipeline();

-- Recompute the rollup from leads: when this file is run on a database that already has leads, and
-- the check for drift (lab_lead_pipeline_drift() lists every bucket that disagrees with leads).
-- SHARE ROW EXCLUSIVE blocks writes to leads (not reads) for the moment of the rebuild.
CREATE OR REPLACE FUNCTION lab_rebuild_lead_pipeline() RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE leads IN SHARE ROW EXCLUSIVE MODE;
    TRUNCATE lead_pipeline_hourly;
    INSERT INTO lead_pipeline_hourly (tenant_id, hour, stage, lead_count, total_value)
    SELECT tenant_id, date_trunc('hour', created_at, 'UTC'), stage, count(*), sum(value)
      FROM leads GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION lab_rebuild_lead_pipeline() FROM PUBLIC;
COMMENT ON FUNCTION lab_rebuild_lead_pipeline() IS
    'Recompute lead_pipeline_hourly from leads (owner only); returns the number of buckets';

CREATE OR REPLACE FUNCTION lab_lead_pipeline_drift()
RETURNS TABLE (tenant_id uuid, hour timestamptz, stage text, rollup_count integer, leads_count bigint,
               rollup_value numeric, leads_value numeric)
LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(r.tenant_id, l.tenant_id), COALESCE(r.hour, l.hour), COALESCE(r.stage, l.stage),
           r.lead_count, l.n, r.total_value, l.v
      FROM lead_pipeline_hourly AS r
      FULL JOIN (SELECT leads.tenant_id, date_trunc('hour', created_at, 'UTC') AS hour, leads.stage,
                        count(*) AS n, sum(value) AS v
                   FROM leads GROUP BY 1, 2, 3) AS l
        ON (r.tenant_id, r.hour, r.stage) = (l.tenant_id, l.hour, l.stage)
     WHERE r.lead_count IS DISTINCT FROM l.n OR r.total_value IS DISTINCT FROM l.v
$$;
COMMENT ON FUNCTION lab_lead_pipeline_drift() IS
    'Buckets where lead_pipeline_hourly disagrees with leads (none when the triggers did their job)';

-- Existing leads (a run after data was loaded): rebuild only when the rollup disagrees with them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM lab_lead_pipeline_drift()) THEN
        PERFORM lab_rebuild_lead_pipeline();
    END IF;
END
$$;


-- -------------------------------------------------------------------------------------------------
-- Section 2: contacts counted per segment -- Scenario 2 at any scale
-- -------------------------------------------------------------------------------------------------
-- Scenario 2 counts a tenant's contacts by two hot custom fields. 04's generated columns make it an
-- index-only count, but a count still visits one index entry per match: 79,028 for the largest
-- tenant of the `large` scale, twice that at `xl`. contact_segment_counts keeps the answer per
-- tenant, status and priority (at most a few dozen rows a tenant), so the count reads one row
-- whatever the tenant's size. It is section 1's pattern, applied to contacts:
--   * Kept by statement-level triggers with transition tables (one aggregate per statement); the
--     transition tables carry the generated columns, so a change of custom_fields moves the contact
--     from its old segment to its new one. A segment left with no contacts is deleted.
--   * A contact without the field is counted under '' (a primary key cannot hold NULL); no enum
--     option of the registry (03) is ''.
--   * A table secured like every tenant table (PITFALLS 12, 24), readable by the app roles, written
--     only by the SECURITY DEFINER trigger function; not a materialized view.
--   * The cost: writes of contacts update a segment row each, and two transactions adding contacts to
--     the same tenant and segment take turns on that row until the first commits. Fine for contacts
--     typed in by people and for batched imports; a pipeline of many concurrent single-row writers per
--     tenant would count asynchronously instead.
--   * Only for the fields it was built for: a count over any other custom field is the index-only
--     count of 04's section 3 (when generated) or the GIN plan of its section 1.
CREATE TABLE IF NOT EXISTS contact_segment_counts (
    tenant_id     uuid    NOT NULL,
    cf_status     text    NOT NULL,   -- contacts.cf_status, '' when the contact has none
    cf_priority   text    NOT NULL,   -- contacts.cf_priority, '' when the contact has none
    contact_count integer NOT NULL,
    CONSTRAINT contact_segment_counts_pkey PRIMARY KEY (tenant_id, cf_status, cf_priority)
) WITH (fillfactor = 80);   -- room for HOT updates: the counter changes, the key never does
COMMENT ON TABLE contact_segment_counts IS
    'Contacts per tenant, cf_status and cf_priority (custom fields); kept by triggers on contacts';

GRANT SELECT ON contact_segment_counts TO app_user, app_readonly, app_admin;
ALTER TABLE contact_segment_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_segment_counts FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS contact_segment_counts_tenant_isolation ON contact_segment_counts;
CREATE POLICY contact_segment_counts_tenant_isolation ON contact_segment_counts AS PERMISSIVE FOR ALL TO PUBLIC
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);

-- As in section 1: one statement per event, the net change of each segment, in key order.
CREATE OR REPLACE FUNCTION lab_maintain_contact_segments() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE contact_segment_counts;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO contact_segment_counts AS r (tenant_id, cf_status, cf_priority, contact_count)
        SELECT tenant_id, coalesce(cf_status, ''), coalesce(cf_priority, ''), count(*)
          FROM new_rows
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, cf_status, cf_priority) DO UPDATE
           SET contact_count = r.contact_count + EXCLUDED.contact_count;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO contact_segment_counts AS r (tenant_id, cf_status, cf_priority, contact_count)
        SELECT tenant_id, coalesce(cf_status, ''), coalesce(cf_priority, ''), -count(*)
          FROM old_rows
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, cf_status, cf_priority) DO UPDATE
           SET contact_count = r.contact_count + EXCLUDED.contact_count;
    ELSE   -- UPDATE: each new version adds (n = +1), each old one subtracts (n = -1)
        INSERT INTO contact_segment_counts AS r (tenant_id, cf_status, cf_priority, contact_count)
        SELECT tenant_id, coalesce(cf_status, ''), coalesce(cf_priority, ''), sum(n)
          FROM (SELECT tenant_id, cf_status, cf_priority, 1 AS n FROM new_rows
                UNION ALL
                SELECT tenant_id, cf_status, cf_priority, -1 FROM old_rows) AS changed
         GROUP BY 1, 2, 3
        HAVING sum(n) <> 0   -- a contact that kept its segment changes nothing
         ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, cf_status, cf_priority) DO UPDATE
           SET contact_count = r.contact_count + EXCLUDED.contact_count;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM contact_segment_counts AS r
         USING (SELECT DISTINCT tenant_id, coalesce(cf_status, '') AS s, coalesce(cf_priority, '') AS p
                  FROM old_rows) AS o
         WHERE (r.tenant_id, r.cf_status, r.cf_priority) = (o.tenant_id, o.s, o.p)
           AND r.contact_count = 0;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION lab_maintain_contact_segments() FROM PUBLIC;
COMMENT ON FUNCTION lab_maintain_contact_segments() IS
    'Statement-level trigger on contacts: applies the net change of each statement to contact_segment_counts';

CREATE OR REPLACE TRIGGER contacts_segments_insert
    AFTER INSERT ON contacts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_contact_segments();
CREATE OR REPLACE TRIGGER contacts_segments_update
    AFTER UPDATE ON contacts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_contact_segments();
CREATE OR REPLACE TRIGGER contacts_segments_delete
    AFTER DELETE ON contacts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_contact_segments();
CREATE OR REPLACE TRIGGER contacts_segments_truncate
    AFTER TRUNCATE ON contacts
    FOR EACH STATEMENT EXECUTE FUNCTION lab_maintain_contact_segments();

-- Recompute from contacts (a run on loaded data, a bulk load without triggers), and the audit.
CREATE OR REPLACE FUNCTION lab_rebuild_contact_segments() RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE contacts IN SHARE ROW EXCLUSIVE MODE;   -- blocks writes (not reads) for the moment
    TRUNCATE contact_segment_counts;
    INSERT INTO contact_segment_counts (tenant_id, cf_status, cf_priority, contact_count)
    SELECT tenant_id, coalesce(cf_status, ''), coalesce(cf_priority, ''), count(*)
      FROM contacts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION lab_rebuild_contact_segments() FROM PUBLIC;
COMMENT ON FUNCTION lab_rebuild_contact_segments() IS
    'Recompute contact_segment_counts from contacts (owner only); returns the number of segments';

CREATE OR REPLACE FUNCTION lab_contact_segments_drift()
RETURNS TABLE (tenant_id uuid, cf_status text, cf_priority text, rollup_count integer, contacts_count bigint)
LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(r.tenant_id, c.tenant_id), COALESCE(r.cf_status, c.s), COALESCE(r.cf_priority, c.p),
           r.contact_count, c.n
      FROM contact_segment_counts AS r
      FULL JOIN (SELECT contacts.tenant_id, coalesce(contacts.cf_status, '') AS s,
                        coalesce(contacts.cf_priority, '') AS p, count(*) AS n
                   FROM contacts GROUP BY 1, 2, 3) AS c
        ON (r.tenant_id, r.cf_status, r.cf_priority) = (c.tenant_id, c.s, c.p)
     WHERE r.contact_count IS DISTINCT FROM c.n
$$;
COMMENT ON FUNCTION lab_contact_segments_drift() IS
    'Segments where contact_segment_counts disagrees with contacts (none when the triggers did their job)';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM lab_contact_segments_drift()) THEN
        PERFORM lab_rebuild_contact_segments();
    END IF;
END
$$;

RESET lock_timeout;
RESET client_min_messages;
