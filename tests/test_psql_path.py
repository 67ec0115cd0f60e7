"""The lesson's psql path, verbatim: README's psql blocks, typed into the wheel's psql in ``sql/``.

README's section "The lesson's psql path" says where to ``cd`` (``sql/``), which psql, the tenant ids
and ``\\bind``. Its ``sql`` blocks marked ``<!-- tests/test_psql_path.py feeds this block to psql as
... -->`` are fed here to psql on stdin, byte for byte, with the working directory ``sql/`` (``psql -X
-a -v ON_ERROR_STOP=0``, ``-a`` echoing each line as a student sees it typed): on a fresh database the
administrator's session (the whole lesson: every stage, the seed, the scenarios), then app_user's (the
lesson's reads under RLS), each with zero errors and the results README promises. Also checked: the
administrator's block is the lesson's text but for the substitutions README lists; every ``\\i``
resolves in ``sql/`` and in the layout docker-compose.yml mounts; ``sql/tenant-ids.psql`` holds the
seed's ids; ``sql/tests/jsonb-performance.sql`` gives the session back as it found it and shows the
plans its header describes.

Cost: about 6 s of its own on a quiet 2-core machine: 5 s for the lesson's session 1 (every stage and
the seed, through psql), well under a second for each other psql session and database copy; run alone,
add about 8 s for the session's built template (conftest's ``built_template``, shared with other
modules): 20 s for this file alone. Up to 3x that while other suites load the same test server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from labhelpers import db, lesson

PROJECT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT / "sql"  # the lesson's directory (README: `cd sql`)
README = PROJECT / "README.md"
SECTION = "## The lesson's psql path"
ACME = lesson.TENANTS["acme"]
GLOBEX = lesson.TENANTS["globex"]

ADMIN, APP = "the administrator", "app_user"
_MARKER = re.compile(
    r"<!-- tests/test_psql_path\.py feeds this block to psql as (the administrator|app_user), "
    r"line by line: keep it runnable -->\n```sql\n(.*?)\n```",
    re.S,
)
# An error or warning as psql prints one: "ERROR:  ..." from stdin, "psql:FILE:LINE: ERROR:  ..." from
# a \i'd file, "psql:<stdin>:3: error: ..." from psql itself (a file it cannot open).
_PROBLEM = re.compile(r"^(?:psql:[^:\n]*:\d+: )?(?:ERROR|FATAL|PANIC|WARNING|error|warning):", re.M)
_FOOTER = re.compile(r"^\((\d+) rows?\)$", re.M)

# The lesson's psql code blocks as day1-schema-design.md prints them (headings become comments; the
# queries are labhelpers.lesson's, which are the lesson's verbatim).
LESSON_BLOCKS: list[tuple[str | None, str]] = [
    ("Step 1: Core Tables",
     "-- Start with the foundation schema\n\\i 01-foundation-schema.sql\n\n-- Verify table structure\n"
     "\\\\d+ tenants\n\\\\d+ tenant_users\n\\\\d+ contacts\n\\\\d+ leads"),
    ("Step 2: Row-Level Security (RLS)",
     "-- Implement RLS policies\n\\i 02-rls-policies.sql\n\n-- Test tenant isolation\n"
     "SET app.current_tenant = 'tenant-1-uuid';\nSELECT * FROM contacts; -- Should only show tenant 1 data"),
    ("Step 3: JSONB Custom Fields",
     "-- Add flexible custom fields\n\\i 03-jsonb-fields.sql\n\n-- Create optimized indexes\n\\i 04-jsonb-indexes.sql"),
    ("Step 4: Partitioning",
     "-- Implement time-based partitioning for activities\n\\i 05-partitioning.sql\n\n-- Test partition pruning\n"
     "EXPLAIN (ANALYZE, BUFFERS) \n" + lesson.STEP_4),
    (None,
     "-- Test 1: Contact search with custom fields\n\\\\timing on\n" + lesson.TEST_1
     + "\n\n-- Test 2: Lead pipeline analytics\n" + lesson.TEST_2
     + "\n\n-- Test 3: Activity timeline\n" + lesson.TEST_3),
    ("Scenario 1: Multi-Tenant Data Isolation",
     "-- Create test data for 3 tenants\n\\i data/seed-tenants.sql\n\n-- Verify complete isolation\n"
     "-- Each query should return 0 results for other tenants\nSET app.current_tenant = 'tenant-1-uuid';\n"
     + lesson.SCENARIO_1 + "\n-- Expected: 0"),
    ("Scenario 2: Custom Fields Performance",
     "-- Test JSONB query performance\n\\i tests/jsonb-performance.sql\n\n-- Should complete in < 100ms\n"
     + lesson.SCENARIO_2),
    ("Scenario 3: Partition Pruning",
     "-- Verify partition pruning works\nEXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)\n" + lesson.SCENARIO_3
     + "\n\n-- Check that only relevant partitions are scanned"),
]


def as_readme_says(text: str) -> str:
    """The lesson's text with README's substitutions: one backslash, acme's id, ``\\bind ... \\g`` for $1."""
    text = text.replace("\\\\", "\\")
    text = lesson.with_tenant(text, ACME)
    for query in (lesson.TEST_1, lesson.TEST_2, lesson.TEST_3):
        text = text.replace(query, query[:-1] + f" \\bind '{ACME}' \\g")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def readme_blocks() -> list[tuple[str, str]]:
    """(role, text) of each marked psql block of README's section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    blocks = [(m.group(1), m.group(2)) for m in _MARKER.finditer(text[start:] if end < 0 else text[start:end])]
    assert blocks, f"README's section {SECTION!r} has no marked psql blocks"
    return blocks


def section_text() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end]


def psql_client() -> Path:
    psql = db.psql_path()
    if psql is None:
        pytest.skip("no psql client")
    version = subprocess.run([str(psql), "--version"], capture_output=True, text=True, check=True).stdout
    major = int(re.search(r"(\d+)", version).group(1))  # type: ignore[union-attr]
    if major < 16:
        pytest.skip(f"{psql} is psql {major}: the lesson's path needs \\bind (psql 16+)")
    return psql


def run_psql(dsn: str, script: str, *, echo: bool = True) -> str:
    """Feed ``script`` to psql on stdin in sql/, echoing every line (-a); return stdout and stderr together."""
    proc = subprocess.run(
        [str(psql_client()), "-X", *(["-a"] if echo else []), "-v", "ON_ERROR_STOP=0", dsn],
        input=script + "\n",
        cwd=SQL_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        env={**os.environ, "PAGER": "cat", "LC_MESSAGES": "C"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def problems(out: str) -> list[str]:
    lines = [m.group(0) + out[m.end():out.find("\n", m.end())] for m in _PROBLEM.finditer(out)]
    return lines + [line for line in out.splitlines() if line.startswith("invalid command")]


class Transcript:
    """A psql transcript (-a), read forward: each result is found after the echo of its last line."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.pos = 0

    def result(self, echoed: str) -> str:
        """The output after the next echo of ``echoed`` (a whole line), through its "(N rows)" footer."""
        i = self.out.index("\n" + echoed + "\n", self.pos)
        footer = _FOOTER.search(self.out, i)
        assert footer, f"no result after {echoed!r}"
        self.pos = footer.end()
        return self.out[i + len(echoed) + 2:footer.end()]

    def rows(self, echoed: str) -> list[list[str]]:
        """The rows of that result, as lists of stripped cells (aligned format)."""
        lines = self.result(echoed).splitlines()
        rule = next(k for k, line in enumerate(lines) if re.fullmatch(r"-+(\+-+)*", line))
        return [[cell.strip() for cell in line.split("|")] for line in lines[rule + 1:-1] if line]

    def number(self, echoed: str) -> int:
        ((value,),) = self.rows(echoed)
        return int(value)


def scanned(plan: str) -> set[str]:
    """Relations a plan reads, text or JSON format."""
    return set(re.findall(r" on (\w+)", plan)) | set(re.findall(r'"Relation Name": "(\w+)"', plan))


def last_line(sql: str) -> str:
    return sql.rstrip().split("\n")[-1].rstrip()


_SCRIPT_LAST_LINE = last_line((SQL_DIR / "tests" / "jsonb-performance.sql").read_text())


# --------------------------------------------------------------------------------------------------
# What README says (no database)
# --------------------------------------------------------------------------------------------------


def test_readme_blocks_are_the_lesson_with_only_the_substitutions_it_lists() -> None:
    blocks = readme_blocks()
    assert [role for role, _ in blocks] == [ADMIN, APP, APP, ADMIN], "session 1, session 2, PREPARE, \\d"
    admin, app = blocks[0][1], blocks[1][1]
    expected = "\n\n".join((f"-- {title}\n" if title else "") + body for title, body in LESSON_BLOCKS)
    assert admin == as_readme_says(expected), "README's session 1 must be the lesson, substituted as README says"
    # Session 2: the lesson's reads, each line as in session 1 and in its order; no stage file, no seed.
    wanted = [line for line in app.split("\n") if line and not line.startswith("-- ")]
    admin_lines = admin.split("\n")
    k = 0
    for line in wanted:
        assert line in admin_lines[k:], f"session 2 line {line!r} is not the lesson's (or out of order)"
        k = admin_lines.index(line, k) + 1
    for read in (lesson.STEP_4, lesson.TEST_1, lesson.TEST_2, lesson.TEST_3, lesson.SCENARIO_1,
                 lesson.SCENARIO_2, lesson.SCENARIO_3):
        assert as_readme_says(read) in app, f"session 2 lacks {read.splitlines()[0]!r}"
    assert "\\i tests/jsonb-performance.sql" in app and "\\i 0" not in app and "seed-tenants" not in app
    # The older psql's form is the lesson's Test 1 too.
    assert as_readme_says(lesson.TEST_1).rsplit(" \\bind", 1)[0] + ";" in blocks[2][1]


def test_readme_says_where_which_psql_which_ids_and_how_to_bind() -> None:
    text = section_text()
    for needed in ("cd sql", "labhelpers db psql", "labhelpers db psql --role app_user", "psql 16", "\\bind",
                   "tenant-ids.psql", "docker compose exec -w /lab/sql", "\\cd /lab/sql", "PREPARE",
                   "invalid command \\", "there is no parameter $1", "invalid input syntax for type uuid"):
        assert needed in text, f"README's psql section should say {needed!r}"
    for slug, tenant_id in lesson.TENANTS.items():
        assert re.search(rf"\| {slug} \| `{tenant_id}` \|", text), f"README's table of ids lacks {slug}"


def test_every_file_the_blocks_read_is_there_in_sql_and_in_the_docker_mount(tmp_path: Path) -> None:
    included = [m.group(1) for _, block in readme_blocks() for m in re.finditer(r"^\\i (\S+)$", block, re.M)]
    assert "data/seed-tenants.sql" in included and "tests/jsonb-performance.sql" in included
    link = SQL_DIR / "data"
    assert link.is_symlink() and os.readlink(link) == "../data", "sql/data must be the relative link ../data"
    # docker-compose.yml mounts ./sql and ./data under /lab: lay out a copy the same way, links kept.
    compose = (PROJECT / "docker-compose.yml").read_text()
    mounts = dict(re.findall(r"^\s*- \./(\w+):(/lab/\w+)(?::ro)?\s*$", compose, re.M))
    assert mounts.get("sql") == "/lab/sql" and mounts.get("data") == "/lab/data", mounts
    for host, inside in mounts.items():
        shutil.copytree(PROJECT / host, tmp_path / inside.lstrip("/"), symlinks=True)
    lab = (tmp_path / "lab").resolve()
    for name in included + ["tenant-ids.psql"]:
        assert (SQL_DIR / name).is_file(), f"\\i {name} does not resolve in sql/"
        path = (lab / "sql" / name).resolve()
        assert path.is_file() and path.is_relative_to(lab), f"\\i {name} does not resolve in /lab/sql"


def test_tenant_ids_file_holds_the_seeds_ids() -> None:
    text = (SQL_DIR / "tenant-ids.psql").read_text()
    seed = (PROJECT / "data" / "seed-tenants.sql").read_text()
    values = dict(re.findall(r"^\\set (\w+) '([0-9a-f-]{36})'$", text, re.M))
    assert values == {"tenant1": lesson.TENANTS["acme"], "tenant2": lesson.TENANTS["globex"],
                      "tenant3": lesson.TENANTS["initech"]}
    for n, (slug, tenant_id) in enumerate(lesson.TENANTS.items(), start=1):
        assert f"\\set {slug} :tenant{n}" in text
        assert re.search(rf"\({n}, '{tenant_id}'::uuid, '{slug}'", seed), f"{slug} is not {tenant_id} in the seed"


# --------------------------------------------------------------------------------------------------
# Following README letter by letter
# --------------------------------------------------------------------------------------------------


def test_the_lesson_runs_in_psql_as_readme_writes_it(fresh_dsn: str) -> None:
    blocks = readme_blocks()
    app_dsn = db.role_dsn(fresh_dsn, "app_user")

    # Session 1: the administrator, the whole lesson on an empty database.
    out = run_psql(fresh_dsn, blocks[0][1])
    assert problems(out) == [], "\n".join(problems(out))
    for table in ("tenants", "tenant_users", "contacts", "leads"):
        assert f'Table "public.{table}"' in out, f"\\d+ {table} showed nothing"
    t = Transcript(out)
    assert t.rows("SELECT * FROM contacts; -- Should only show tenant 1 data") == []  # no data yet
    step4 = t.result(last_line(lesson.STEP_4))
    assert scanned(step4) == {f"activities_2024_01_h{r}" for r in range(4)}, step4  # January, every tenant
    # The superuser sees through RLS (README says so): every other tenant's contacts.
    assert t.number(as_readme_says(lesson.SCENARIO_1)) == 1500
    assert "activities is now partitioned" in out and "INFO:" in out

    # Session 2: app_user, the lesson's reads under RLS.
    out = run_psql(app_dsn, blocks[1][1])
    assert problems(out) == [], "\n".join(problems(out))
    t = Transcript(out)
    step2 = t.rows("SELECT * FROM contacts; -- Should only show tenant 1 data")
    assert len(step2) == 1500 and {row[0] for row in step2} == {ACME}, "Step 2 must show acme's contacts only"
    step4 = t.result(last_line(lesson.STEP_4))
    assert scanned(step4) == {"activities_2024_01_h0"} and "Subplans Removed: 3" in step4, step4
    assert len(t.rows(last_line(as_readme_says(lesson.TEST_1)))) == 20
    assert {row[0] for row in t.rows(last_line(as_readme_says(lesson.TEST_2)))} == {
        "new", "qualified", "proposal", "negotiation", "won", "lost"}
    assert len(t.rows(last_line(as_readme_says(lesson.TEST_3)))) == 50
    assert t.number(as_readme_says(lesson.SCENARIO_1)) == 0
    # The script (echoed too) ends by giving the session back its role and tenant...
    assert t.rows(_SCRIPT_LAST_LINE) == [["none", ACME]]
    # ...so the lesson's count that follows is acme's, not the 0 of no tenant.
    with psycopg.connect(app_dsn) as conn:
        conn.execute(f"SET app.current_tenant = '{ACME}'")
        (acme_count,) = conn.execute(lesson.SCENARIO_2).fetchone()  # type: ignore[misc]
    assert acme_count == 94
    assert t.number(last_line(lesson.SCENARIO_2)) == acme_count
    scenario3 = t.result(last_line(lesson.SCENARIO_3))
    assert scanned(scenario3) == {"activities_2024_01_h0"}, scenario3

    # With psql 15 or older: PREPARE / EXECUTE.
    out = run_psql(app_dsn, blocks[2][1])
    assert problems(out) == [] and "(20 rows)" in out, out[-2000:]

    # The readable alternatives to \d+ activities.
    out = run_psql(fresh_dsn, blocks[3][1])
    assert problems(out) == [], "\n".join(problems(out))
    assert "Number of partitions:" in out and re.search(r"^\(3 rows\)$", out, re.M) and re.search(r"^\(5 rows\)$", out, re.M)

    # The psql variables README names.
    out = run_psql(app_dsn, "\\i tenant-ids.psql\nSET app.current_tenant = :'tenant1';\n"
                   "SELECT COUNT(*) FROM contacts WHERE tenant_id = $1 \\bind :tenant1 \\g")
    assert problems(out) == [], out
    assert Transcript(out).number("SELECT COUNT(*) FROM contacts WHERE tenant_id = $1 \\bind :tenant1 \\g") == 1500


# --------------------------------------------------------------------------------------------------
# tests/jsonb-performance.sql: the session it leaves, the plans it shows
# --------------------------------------------------------------------------------------------------

_AFTER = "SELECT current_user, current_setting('role'), current_setting('app.current_tenant', true);"


@pytest.mark.parametrize(
    ("login", "before", "expected"),
    [
        ("admin", f"SET app.current_tenant = '{GLOBEX}';", ["postgres", "none", GLOBEX]),
        ("admin", "SET ROLE app_readonly;", ["app_readonly", "app_readonly", ""]),  # unset comes back ''
        ("app_user", f"SET app.current_tenant = '{GLOBEX}';", ["app_user", "none", GLOBEX]),
    ],
    ids=["admin-tenant-set", "admin-role-set-tenant-unset", "app_user-tenant-set"],
)
def test_jsonb_performance_gives_the_session_back(shared_built_dsn: str, login: str, before: str,
                                                    expected: list[str]) -> None:
    dsn = shared_built_dsn if login == "admin" else db.role_dsn(shared_built_dsn, "app_user")
    out = run_psql(dsn, f"{before}\n\\i tests/jsonb-performance.sql\n{_AFTER}")
    assert problems(out) == [], "\n".join(problems(out))
    assert " app_user  | f " in out  # it did act as app_user meanwhile
    t = Transcript(out)
    assert t.rows(_AFTER) == [expected]


def _plans(out: str) -> list[str]:
    """The EXPLAIN outputs of a transcript without echo, each through its "(N rows)" footer."""
    return [_FOOTER.split(p, 1)[0] for p in re.split(r"^ +QUERY PLAN *$", out, flags=re.M)[1:]]


def test_jsonb_performance_plans_are_those_its_header_describes(shared_built_dsn: str) -> None:
    """The header's claims on the seed data, for the administrator (SET ROLE) and for app_user's login."""
    index_scan_filter = re.compile(r"Index Scan using contacts_tenant_\w+ on contacts .*\n(?:.*\n)*?\s+Filter: \(")
    gin = "Bitmap Index Scan on contacts_custom_fields_gin"
    for dsn in (shared_built_dsn, db.role_dsn(shared_built_dsn, "app_user")):
        out = run_psql(dsn, "\\i tests/jsonb-performance.sql", echo=False)
        assert problems(out) == [], "\n".join(problems(out))
        plans = _plans(out)
        assert len(plans) == 6, out
        common, rare, path, scenario2, generated, test2 = plans
        assert "Index Scan using contacts_tenant_cf_status_priority_idx on contacts" in common, common
        assert "Filter: (custom_fields @> '{\"industry\": \"tech\"}'" in common, common
        assert "Rows Removed by Filter" not in common  # the first 20 entries match (the header says why)
        assert gin in rare and "Filter: (tenant_id = " in rare, rare
        assert gin not in path and "Filter: ((custom_fields ->> 'score'::text) = '42'::text)" in path, path
        # Before the pending list is merged: btree + Filter; after (autovacuum may have run): BitmapAnd.
        assert (index_scan_filter.search(scenario2) and "Rows Removed by Filter: 1406" in scenario2) or (
            "BitmapAnd" in scenario2 and gin in scenario2), scenario2
        assert "Index Only Scan using contacts_tenant_cf_status_priority_idx" in generated
        assert "Filter" not in generated
        assert "Index Scan using leads_tenant_created_idx" in test2
        assert re.search(r"Index Cond: \(.*created_at >= \(CURRENT_DATE - ", test2), test2
    with psycopg.connect(shared_built_dsn, autocommit=True) as conn:
        conn.execute("VACUUM contacts")
    plans = _plans(run_psql(shared_built_dsn, "\\i tests/jsonb-performance.sql", echo=False))
    assert "BitmapAnd" in plans[3] and gin in plans[3] and "Rows Removed by Filter" not in plans[3], plans[3]
    assert "Heap Fetches: 0" in plans[4], plans[4]
