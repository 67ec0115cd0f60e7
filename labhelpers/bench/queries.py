"""What the benchmark times: the lesson's queries verbatim, the course's tuned versions, the tenant
switch and the floor; the policy spellings and LEAKPROOF marks it compares; the lesson's targets."""

from __future__ import annotations

from dataclasses import dataclass

from .. import lesson

__all__ = [
    "BENCHMARKS", "COLD_CONNECTIONS", "DETERMINISTIC", "FLOOR_SQL", "LEAKPROOF_FUNCS", "MARGIN", "POLICY_VARIANTS",
    "POOL_KEYS", "POOL_SIZE", "SCENARIO2", "SWITCH_LOCAL_SQL", "SWITCH_SQL", "TARGETS_MS", "TEST1", "TEST2",
    "TEST3", "VARIANT_QUERIES", "Benchmark",
]

# The lesson's targets (labhelpers.lesson is the one place for the lesson's text and numbers).
TARGETS_MS: dict[str, float] = lesson.TARGETS_MS
# "Every target with at least 10x margin" is the course's own bar at the large scale.
MARGIN = 10.0


@dataclass(frozen=True)
class Benchmark:
    """One timed query: ``sql`` uses ``$1`` for the tenant id when ``tenant_param`` is true."""

    key: str
    lesson: str          # key into TARGETS_MS
    title: str
    variant: str         # 'verbatim' (the lesson's text) or 'tuned' (the course's fix) or 'floor'
    sql: str
    tenant_param: bool
    note: str = ""
    needs: str = ""      # what the tuned query needs from the schema (shown when it is missing)
    owner_sql: str | None = None  # the owner's version (explicit tenant predicate), for RLS overhead
    extra_params: tuple[str, ...] = ()  # SQL expressions evaluated once in the session: $2, $3, ...

    @property
    def target_ms(self) -> float:
        """The lesson's target for this benchmark."""
        return TARGETS_MS[self.lesson]


# The lesson's queries, verbatim.
TEST1, TEST2, TEST3, SCENARIO2 = lesson.TEST_1, lesson.TEST_2, lesson.TEST_3, lesson.SCENARIO_2

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("test1", "test1", "Test 1: contact search by custom field", "verbatim", TEST1, True),
    Benchmark(
        "test1_tuned", "test1", "Test 1 tuned: generated column cf_industry", "tuned",
        "SELECT * FROM contacts\nWHERE tenant_id = $1\n  AND cf_industry = 'tech'\nLIMIT 20;", True,
        note="text = is leakproof: (tenant_id, cf_industry) is one index condition under RLS",
        needs="contacts.cf_industry (sql/04) and index (tenant_id, cf_industry)",
    ),
    Benchmark("test2", "test2", "Test 2: lead pipeline analytics", "verbatim", TEST2, True),
    Benchmark(
        "test2_tuned", "test2", "Test 2 tuned: timestamptz bound, covering index", "tuned",
        """SELECT
  stage,
  COUNT(*) as count,
  SUM(value) as total_value
FROM leads
WHERE tenant_id = $1
  AND created_at >= (CURRENT_DATE - INTERVAL '30 days')::timestamptz
GROUP BY stage;""", True,
        note="the explicit ::timestamptz is what the implicit cross-type comparison does, as a leakproof "
             "operator (an index condition under RLS); value is the column custom_fields->'value' mirrors "
             "(a CHECK keeps them equal), so leads (tenant_id, created_at) INCLUDE (stage, value) answers it "
             "index-only; the benchmark checks the answer equals the verbatim query's",
        needs="index leads (tenant_id, created_at) INCLUDE (stage, value) (sql/01)",
    ),
    Benchmark(
        "test2_rollup", "test2", "Test 2 rollup: pre-aggregated per hour and stage", "tuned",
        """SELECT
  stage,
  SUM(lead_count) as count,
  SUM(total_value) as total_value
FROM lead_pipeline_hourly
WHERE tenant_id = $1
  AND hour >= (CURRENT_DATE - INTERVAL '30 days')::timestamptz
GROUP BY stage;""", True,
        note="lead_pipeline_hourly (sql/course-rollups.sql section 1, kept by statement triggers on leads) "
             "holds one row per tenant, UTC hour and stage: the last 30 days are at most 30 x 24 x 6 rows whatever the tenant's "
             "size, and local midnight is an hour boundary, so the answer equals the verbatim query's",
        needs="table lead_pipeline_hourly and its triggers on leads (sql/course-rollups.sql)",
    ),
    Benchmark("test3", "test3", "Test 3: activity timeline", "verbatim", TEST3, True),
    Benchmark(
        "test3_tuned", "test3", "Test 3 tuned: the time window as parameters", "tuned",
        """SELECT
  type,
  subject,
  created_at,
  custom_fields
FROM activities
WHERE tenant_id = $1
  AND created_at >= $2
  AND created_at <= $3
ORDER BY created_at DESC
LIMIT 50;""", True,
        note="$2 = (CURRENT_DATE - INTERVAL '7 days')::timestamptz and $3 = now(), computed by the session "
             "first: constants at plan time, so the planner prunes the months before planning them "
             "(PITFALLS 19) instead of planning every monthly partition and pruning at executor start; "
             "the upper bound also prunes the months created ahead (sql/05 keeps 6), which an open-ended "
             "range must plan and scan, empty. Same rows: created_at defaults to now(), nothing is "
             "stamped in the future",
        extra_params=("(CURRENT_DATE - INTERVAL '7 days')::timestamptz", "now()"),
    ),
    Benchmark("scenario2", "scenario2", "Scenario 2: count by two custom fields", "verbatim", SCENARIO2, False,
              owner_sql=SCENARIO2.rstrip(";") + "\n  AND tenant_id = $1;"),
    Benchmark(
        "scenario2_tuned", "scenario2", "Scenario 2 tuned: generated columns, index-only count", "tuned",
        "SELECT COUNT(*) FROM contacts\nWHERE cf_status = 'active' AND cf_priority = 'high';", False,
        note="index-only scan of (tenant_id, cf_status, cf_priority): the policy's tenant_id and both "
             "fields in one index condition",
        needs="contacts.cf_status, cf_priority (sql/04) and index (tenant_id, cf_status, cf_priority)",
        owner_sql="SELECT COUNT(*) FROM contacts\nWHERE cf_status = 'active' AND cf_priority = 'high'\n"
                  "  AND tenant_id = $1;",
    ),
    Benchmark(
        "scenario2_rollup", "scenario2", "Scenario 2 rollup: counts kept per segment", "tuned",
        "SELECT COALESCE(SUM(contact_count), 0) AS count FROM contact_segment_counts\n"
        "WHERE cf_status = 'active' AND cf_priority = 'high';", False,
        note="contact_segment_counts (sql/course-rollups.sql section 2, kept by statement triggers on "
             "contacts) holds one row per tenant, status and priority: the count is one row whatever the tenant's size",
        needs="table contact_segment_counts and its triggers on contacts (sql/course-rollups.sql)",
        owner_sql="SELECT COALESCE(SUM(contact_count), 0) AS count FROM contact_segment_counts\n"
                  "WHERE cf_status = 'active' AND cf_priority = 'high'\n  AND tenant_id = $1;",
    ),
)

SWITCH_SQL = "SELECT set_config('app.current_tenant', $1, false);"
SWITCH_LOCAL_SQL = "BEGIN; SELECT set_config('app.current_tenant', $1, true); COMMIT;"
FLOOR_SQL = "SELECT 1;"

# Queries whose answer is fully determined (Test 1 has LIMIT without ORDER BY: any 20 matches are right).
DETERMINISTIC = ("test2", "test3", "scenario2")

# Fresh logins per query and tenant in `labhelpers bench` (at most `repeat`, so `--repeat 2` stays quick).
COLD_CONNECTIONS = 40
# The queries whose first checkout from a real pool is measured, with and without `warm_up_backend`.
POOL_KEYS = ("test3", "test3_tuned")
POOL_SIZE = 4

# sql/04 marks these LEAKPROOF (PITFALLS 11); the benchmark records them and measures without them.
LEAKPROOF_FUNCS = (
    "pg_catalog.jsonb_contains(jsonb, jsonb)",
    "pg_catalog.timestamptz_lt_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_le_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_eq_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_ge_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_gt_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_ne_timestamp(timestamptz, timestamp)",
)

# The tenant policy of contacts, spelled several ways (PITFALLS 10): (name, the function it needs, USING).
POLICY_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("direct (the course's)", "",
     "tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid"),
    ("scalar subselect", "",
     "tenant_id = (SELECT NULLIF(current_setting('app.current_tenant', true), '')::uuid)"),
    ("STABLE sql function",
     "CREATE FUNCTION lab_bench_tenant_stable() RETURNS uuid LANGUAGE sql STABLE AS "
     "$$ SELECT NULLIF(current_setting('app.current_tenant', true), '')::uuid $$",
     "tenant_id = lab_bench_tenant_stable()"),
    ("(SELECT STABLE plpgsql function)",
     "CREATE FUNCTION lab_bench_tenant_stable_pl() RETURNS uuid LANGUAGE plpgsql STABLE AS "
     "$$ BEGIN RETURN NULLIF(current_setting('app.current_tenant', true), '')::uuid; END $$",
     "tenant_id = (SELECT lab_bench_tenant_stable_pl())"),
    ("STABLE plpgsql function, bare",
     "CREATE FUNCTION lab_bench_tenant_stable_pl() RETURNS uuid LANGUAGE plpgsql STABLE AS "
     "$$ BEGIN RETURN NULLIF(current_setting('app.current_tenant', true), '')::uuid; END $$",
     "tenant_id = lab_bench_tenant_stable_pl()"),
    ("plpgsql function (VOLATILE default)",
     "CREATE FUNCTION lab_bench_tenant_volatile() RETURNS uuid LANGUAGE plpgsql AS "
     "$$ BEGIN RETURN NULLIF(current_setting('app.current_tenant', true), '')::uuid; END $$",
     "tenant_id = lab_bench_tenant_volatile()"),
)
VARIANT_QUERIES: tuple[tuple[str, str], ...] = (
    ("count contacts (policy only)", "SELECT count(*) FROM contacts;"),
    ("scenario2_tuned", next(b.sql for b in BENCHMARKS if b.key == "scenario2_tuned")),
)
