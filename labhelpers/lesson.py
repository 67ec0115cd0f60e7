"""The lesson's own words: its queries verbatim, its targets, its scenario tenants.

One place for the text of ``day1-schema-design.md``, so the benchmark, the checks, the tests and the
notebooks all run exactly what the lesson prints. ``$1`` is the lesson's tenant parameter: run these
with ``psycopg.RawCursor`` (``$n`` placeholders) to keep them byte-for-byte; ``'tenant-1-uuid'`` is its
placeholder for a real tenant id (``with_tenant``).
"""

from __future__ import annotations

__all__ = [
    "PLACEHOLDER",
    "SCENARIO_1",
    "SCENARIO_2",
    "SCENARIO_3",
    "STEP_4",
    "TARGETS_MS",
    "TENANTS",
    "TEST_1",
    "TEST_2",
    "TEST_3",
    "with_tenant",
]

# The three scenario tenants of data/seed-tenants.sql (fixed ids, so tests and notebooks can name them).
TENANTS = {
    "acme": "11111111-1111-7111-8111-111111111111",
    "globex": "22222222-2222-7222-8222-222222222222",
    "initech": "33333333-3333-7333-8333-333333333333",
}

# "Performance Benchmarks / Target Metrics", and Scenario 2's "Should complete in < 100ms".
TARGETS_MS = {
    "test1": 50.0,      # Contact Search: < 50ms for 1M contacts per tenant
    "test2": 100.0,     # Lead Analytics: < 100ms for complex aggregations
    "test3": 25.0,      # Activity Feed: < 25ms for recent activities
    "switch": 10.0,     # Tenant Switch: < 10ms context change
    "scenario2": 100.0,  # Custom Fields Performance: < 100ms
}

# Benchmark Queries (trailing spaces and all, as printed).
TEST_1 = """SELECT * FROM contacts 
WHERE tenant_id = $1 
  AND custom_fields @> '{"industry": "tech"}'
LIMIT 20;"""

TEST_2 = """SELECT 
  stage,
  COUNT(*) as count,
  SUM((custom_fields->>'value')::numeric) as total_value
FROM leads 
WHERE tenant_id = $1 
  AND created_at >= CURRENT_DATE - INTERVAL '30 days'
GROUP BY stage;"""

TEST_3 = """SELECT 
  type,
  subject,
  created_at,
  custom_fields
FROM activities 
WHERE tenant_id = $1 
  AND created_at >= CURRENT_DATE - INTERVAL '7 days'
ORDER BY created_at DESC
LIMIT 50;"""

# Step 4: Partitioning (the query under its EXPLAIN (ANALYZE, BUFFERS)).
STEP_4 = """SELECT * FROM activities 
WHERE created_at >= '2024-01-01' AND created_at < '2024-02-01';"""

# Testing Scenarios.
PLACEHOLDER = "tenant-1-uuid"
SCENARIO_1 = "SELECT COUNT(*) FROM contacts WHERE tenant_id != 'tenant-1-uuid';"

SCENARIO_2 = """SELECT COUNT(*) FROM contacts 
WHERE custom_fields @> '{"status": "active", "priority": "high"}';"""

# Scenario 3 (the query under its EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)).
SCENARIO_3 = """SELECT COUNT(*) FROM activities 
WHERE created_at BETWEEN '2024-01-01' AND '2024-01-31';"""


def with_tenant(sql: str, tenant_id: str) -> str:
    """The lesson's text with its ``'tenant-1-uuid'`` placeholder replaced by a real tenant id."""
    return sql.replace(PLACEHOLDER, tenant_id)
