"""The isolation tests, tested: realistic one-line mistakes, each applied alone to a scratch copy of the project.

Each mutant is a mistake someone could make in the schema or the helpers (a ``GRANT ALL``, a missing
``FORCE``, a view without ``security_invoker``...): an exact text replaced in one file (or a few lines of
SQL appended to a stage). For each one, the runner copies the project into a temporary directory, applies
the mutant there and runs the isolation tests of that copy (``python -m pytest`` in the copy, so the
copy's ``labhelpers`` and ``sql/`` are the ones under test), against the shared test server. A mutant the
tests do not catch is a hole in the tests.

Speed: each run is ``-x -p no:cacheprovider``; first only the tests the mutant lists as its catchers
(`Mutant.caught_by`), and only if they all pass, every relevant file (`TEST_FILES`) until the first
failure. The build template is built once per pytest session, so a mutant costs one build plus the
tests until the first failure. Mutants run ``--jobs`` at a time (each is its own pytest session and
builds its own databases).

Rot: every mutant's old text must occur exactly once in its file, checked before anything runs (and in
the normal suite by ``tests/test_mutants.py``): a file that changed under the list fails loudly, it never
turns a mutant into a silent no-op.

Run: ``make mutants`` (all, report in ``runs/mutants/report.md``), ``make mutants-fast`` (the CI subset),
or ``python tests/mutants.py --help``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
# The files a mutant's full run goes through, cheapest catches first.
TEST_FILES = ("tests/test_isolation.py", "tests/test_checks.py", "tests/test_stages.py")
# Never copied: local state, environments, the running servers' data directories.
IGNORE = (".git", ".venv", ".lab", "runs", "__pycache__", ".pytest_cache", "*.egg-info", ".ipynb_checkpoints",
          "build", "dist", "node_modules")


class MutantRot(Exception):
    """A mutant no longer applies: its old text is not (exactly once) in its file, or a test it names is gone."""


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) with ``new`` in ``path``; ``old`` None: append ``new``."""

    path: str
    old: str | None
    new: str


@dataclass(frozen=True)
class Mutant:
    """One realistic mistake.

    :param name: short kebab-case id.
    :param mistake: what was done wrong, in a few words (with the PITFALLS item).
    :param edits: the changes that make the mistake.
    :param caught_by: node ids (relative to ``tests/``) expected to fail first; run before the full files.
    :param fast: part of the CI subset (caught in seconds by fast tests).
    """

    name: str
    mistake: str
    edits: tuple[Edit, ...]
    caught_by: tuple[str, ...] = ()
    fast: bool = False


def replace(path: str, old: str, new: str) -> Edit:
    return Edit(path, old, new)


def append(path: str, sql: str) -> Edit:
    return Edit(path, None, "\n-- MUTANT (appended)\n" + sql.strip() + "\n")


S01, S02, S03, S04, S05, ROLLUPS = (f"sql/{n}" for n in (
    "01-foundation-schema.sql", "02-rls-policies.sql", "03-jsonb-fields.sql", "04-jsonb-indexes.sql",
    "05-partitioning.sql", "course-rollups.sql"))
# The tenant predicate as the stage files write it in each table's policy (sql/02, section 4).
PRED = "tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid"


def secured(table: str) -> str:
    """The four statements that secure ``table`` in a stage file: RLS enabled, forced, its tenant policy."""
    return (f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n"
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n"
            f"DROP POLICY IF EXISTS {table}_tenant_isolation ON {table};\n"
            f"CREATE POLICY {table}_tenant_isolation ON {table} AS PERMISSIVE FOR ALL TO PUBLIC\n"
            f"    USING ({PRED})\n"
            f"    WITH CHECK ({PRED});\n")


# contacts' tenant policy in sql/02: the predicate mutants change it there (the lesson's table).
CONTACTS_POLICY = ("CREATE POLICY contacts_tenant_isolation ON contacts AS PERMISSIVE FOR ALL TO PUBLIC\n"
                   f"    USING ({PRED})\n"
                   f"    WITH CHECK ({PRED});\n")
ISO = "test_isolation.py::"
CHK = "test_checks.py::"
EVERY_CRITERION = CHK + "test_every_criterion_passes_on_the_built_schema"

MUTANTS: tuple[Mutant, ...] = (
    # ---- RLS on tables and partitions (PITFALLS 2, 3) -------------------------------------------------------
    Mutant("no-force", "contacts without FORCE ROW LEVEL SECURITY: the owner ignores RLS (2)",
           (replace(S02, "ALTER TABLE contacts FORCE ROW LEVEL SECURITY;\n", ""),),
           (EVERY_CRITERION,)),
    Mutant("no-force-after-partitioning", "05's conversion forgets FORCE on the new partitioned activities (2)",
           (replace(S05, "        recreate := recreate || 'ALTER TABLE activities FORCE ROW LEVEL SECURITY'::text;\n", ""),),
           (EVERY_CRITERION,)),
    Mutant("partitions-not-forced", "partitions un-FORCEd so that a non-superuser owner's bulk load sees every row (2, 3)",
           (replace(S02, "    PERFORM lab_secure_table(part);\n",
                    "    PERFORM lab_secure_table(part);\n"
                    "    EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', part);\n"),),
           (EVERY_CRITERION,)),
    Mutant("partition-rls-off-and-granted", "one partition with RLS disabled and SELECT granted to app_user (3)",
           (append(S05, "ALTER TABLE activities_2024_01_h0 DISABLE ROW LEVEL SECURITY;\n"
                        "GRANT SELECT ON activities_2024_01_h0 TO app_user;"),),
           (ISO + "test_unset_and_empty_context_see_zero_rows_without_error",)),
    Mutant("unsecured-new-partitions", "lab_ensure_activity_partitions no longer secures the hash leaves it creates (3)",
           (replace(S05, "                PERFORM lab_secure_partition(leaf_name::regclass);\n", ""),),
           (ISO + "test_partitions_created_later_are_secured_like_every_partition",), fast=True),
    Mutant("table-without-rls", "a later stage's tenant table never secured (03's custom_field_definitions)",
           (replace(S03, secured("custom_field_definitions"), "-- secured later\n"),),
           (ISO + "test_unset_and_empty_context_see_zero_rows_without_error",), fast=True),
    Mutant("rollup-without-rls", "the lead pipeline rollup left without RLS: derived, so 'not tenant data' (24)",
           (replace(ROLLUPS, secured("lead_pipeline_hourly"), "-- lead_pipeline_hourly is derived data\n"),),
           (ISO + "test_unset_and_empty_context_see_zero_rows_without_error",)),
    # ---- the tenant predicate (PITFALLS 4-6, 9) -------------------------------------------------------------
    Mutant("current-setting-without-missing-ok", "current_setting('app.current_tenant') without missing_ok: unset raises (4)",
           (replace(S02, CONTACTS_POLICY, CONTACTS_POLICY.replace("'app.current_tenant', true)", "'app.current_tenant')")),),
           (ISO + "test_unset_and_empty_context_see_zero_rows_without_error",)),
    Mutant("empty-setting-cast", "no NULLIF: after SET LOCAL ends, ''::uuid raises (5)",
           (replace(S02, CONTACTS_POLICY, CONTACTS_POLICY.replace(
               PRED, "tenant_id = current_setting('app.current_tenant', true)::uuid")),),
           (ISO + "test_unset_and_empty_context_see_zero_rows_without_error",)),
    Mutant("fail-open-when-unset", "predicate OR current_setting(...) IS NULL: a job without a tenant sees all (6)",
           (replace(S02, CONTACTS_POLICY, CONTACTS_POLICY.replace(
               PRED, f"({PRED} OR current_setting('app.current_tenant', true) IS NULL)")),),
           (ISO + "test_unset_and_empty_context_see_zero_rows_without_error",), fast=True),
    Mutant("fail-open-coalesce", "COALESCE(predicate, true): unset or empty context sees every tenant (6)",
           (replace(S02, CONTACTS_POLICY, CONTACTS_POLICY.replace(PRED, f"COALESCE({PRED}, true)")),),
           (ISO + "test_unset_and_empty_context_see_zero_rows_without_error",)),
    Mutant("using-without-with-check", "the tenant policy written with USING only, no WITH CHECK",
           (replace(S02, CONTACTS_POLICY, CONTACTS_POLICY.replace(f")\n    WITH CHECK ({PRED});", ");")),),
           (EVERY_CRITERION,)),
    Mutant("permissive-with-check-true", "an extra permissive INSERT policy WITH CHECK (true) for an import (9)",
           (append(S02, "DROP POLICY IF EXISTS contacts_import ON contacts;\n"
                        "CREATE POLICY contacts_import ON contacts AS PERMISSIVE FOR INSERT TO app_user WITH CHECK (true);"),),
           (ISO + "test_insert_for_another_tenant_violates_with_check",)),
    Mutant("permissive-role-rule", "a role rule made PERMISSIVE instead of RESTRICTIVE: OR-ed with the tenant (9)",
           (replace(S02, "CREATE POLICY contacts_insert_by_role ON contacts AS RESTRICTIVE FOR INSERT TO app_user",
                    "CREATE POLICY contacts_insert_by_role ON contacts AS PERMISSIVE FOR INSERT TO app_user"),),
           (ISO + "test_insert_for_another_tenant_violates_with_check",), fast=True),
    Mutant("inactive-user-still-writes", "the is-active test dropped from the write rules' user lookup",
           (replace(S02, "       AND u.status = 'active'\n", ""),),
           (ISO + "test_disabled_user_cannot_write",)),
    # ---- keys (PITFALLS 13-15) ------------------------------------------------------------------------------
    Mutant("global-unique", "contacts' email unique across tenants, not per tenant (13)",
           (replace(S01, "CONSTRAINT contacts_tenant_email_key UNIQUE (tenant_id, email),",
                    "CONSTRAINT contacts_tenant_email_key UNIQUE (email),"),),
           (ISO + "test_unique_keys_are_per_tenant",)),
    Mutant("single-column-foreign-key", "leads.contact_id REFERENCES contacts (id), with the UNIQUE (id) it needs (14)",
           (replace(S01, "    CONSTRAINT contacts_pkey PRIMARY KEY (tenant_id, id),\n",
                    "    CONSTRAINT contacts_pkey PRIMARY KEY (tenant_id, id),\n    CONSTRAINT contacts_id_key UNIQUE (id),\n"),
            replace(S01, "CONSTRAINT leads_contact_fkey FOREIGN KEY (tenant_id, contact_id)\n"
                         "        REFERENCES contacts (tenant_id, id) ON DELETE SET NULL (contact_id),",
                    "CONSTRAINT leads_contact_fkey FOREIGN KEY (contact_id)\n        REFERENCES contacts (id) ON DELETE SET NULL,")),
           (ISO + "test_foreign_keys_cannot_reference_another_tenants_rows",)),
    # ---- roles and privileges (PITFALLS 1, 2, 31) -----------------------------------------------------------
    Mutant("grant-all", "GRANT ALL on the tenant tables: TRUNCATE (which ignores RLS) included (31)",
           (replace(S02, "GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_users, contacts, leads, activities TO app_user, app_admin;",
                    "GRANT ALL ON tenant_users, contacts, leads, activities TO app_user, app_admin;"),),
           (ISO + "test_app_roles_hold_exactly_the_privileges_they_need",), fast=True),
    Mutant("readonly-role-writes", "app_readonly granted the writers' privileges (copy of the line above)",
           (replace(S02, "GRANT SELECT ON tenant_users, contacts, leads, activities TO app_readonly;",
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_users, contacts, leads, activities TO app_readonly;"),),
           (ISO + "test_app_roles_hold_exactly_the_privileges_they_need",)),
    Mutant("app-user-writes-tenants", "app_user may update its tenants row (plan, status) like app_admin",
           (replace(S02, "GRANT INSERT, UPDATE ON tenants TO app_admin;", "GRANT INSERT, UPDATE ON tenants TO app_user, app_admin;"),),
           (ISO + "test_insert_for_another_tenant_violates_with_check",)),
    Mutant("app-user-owns-a-table", "a table owned by app_user (a migration run as the app role) (2)",
           (append(ROLLUPS, "ALTER TABLE contact_segment_counts OWNER TO app_user;"),),
           (ISO + "test_app_roles_are_not_superuser_bypassrls_or_owner",)),
    # ---- functions (SECURITY DEFINER) -----------------------------------------------------------------------
    Mutant("like-in-tenant-lookup", "lab_find_tenant matches the slug with LIKE: '%' lists every tenant",
           (replace(S02, "WHERE (t.slug = key OR t.id::text = lower(key))", "WHERE (t.slug LIKE key OR t.id::text = lower(key))"),),
           (ISO + "test_app_user_can_resolve_a_tenant_slug_but_not_enumerate",), fast=True),
    Mutant("definer-trigger-without-search-path", "the rollup's SECURITY DEFINER trigger function without SET search_path",
           (replace(ROLLUPS, "lab_maintain_lead_pipeline() RETURNS trigger\nLANGUAGE plpgsql SECURITY DEFINER\n"
                             "SET search_path = public, pg_catalog, pg_temp\n",
                    "lab_maintain_lead_pipeline() RETURNS trigger\nLANGUAGE plpgsql SECURITY DEFINER\n"),),
           (ISO + "test_security_definer_functions_pin_their_search_path",
            ISO + "test_definer_triggers_ignore_the_callers_temporary_tables"), fast=True),
    Mutant("definer-search-path-pg-temp-first", "lab_find_tenant's search_path with pg_temp first",
           (replace(S02, "LANGUAGE sql STABLE SECURITY DEFINER\nSET search_path = public, pg_catalog, pg_temp\n",
                    "LANGUAGE sql STABLE SECURITY DEFINER\nSET search_path = pg_temp, public, pg_catalog\n"),),
           (ISO + "test_security_definer_functions_pin_their_search_path",)),
    # ---- views (PITFALLS 12) --------------------------------------------------------------------------------
    Mutant("view-without-security-invoker", "a contact directory view without security_invoker (12)",
           (append(S04, "CREATE OR REPLACE VIEW contact_directory AS\n"
                        "    SELECT tenant_id, id, first_name, last_name, email, company FROM contacts;\n"
                        "GRANT SELECT ON contact_directory TO app_user, app_readonly;"),),
           (ISO + "test_views_run_as_the_caller",)),
    Mutant("reporting-view-in-another-schema", "a reporting schema's view without security_invoker (12)",
           (append(S02, "CREATE SCHEMA IF NOT EXISTS reporting;\n"
                        "GRANT USAGE ON SCHEMA reporting TO app_readonly;\n"
                        "CREATE OR REPLACE VIEW reporting.lead_totals AS\n"
                        "    SELECT tenant_id, stage, count(*) AS leads, sum(value) AS value FROM leads GROUP BY 1, 2;\n"
                        "GRANT SELECT ON reporting.lead_totals TO app_readonly;"),),
           (ISO + "test_views_run_as_the_caller",), fast=True),
    Mutant("materialized-view", "a materialized view for the dashboard: no RLS at all (12)",
           (append(S04, "CREATE MATERIALIZED VIEW IF NOT EXISTS lead_stage_totals AS\n"
                        "    SELECT tenant_id, stage, count(*) AS leads FROM leads GROUP BY 1, 2;\n"
                        "GRANT SELECT ON lead_stage_totals TO app_user;"),),
           (ISO + "test_views_run_as_the_caller",)),
    # ---- the helpers ----------------------------------------------------------------------------------------
    Mutant("session-set-config-in-tenant-helper", "tenant() sets the tenant for the session, not the transaction (7)",
           (replace("labhelpers/tenants.py", "_set(conn, found, user, local=True)", "_set(conn, found, user, local=False)"),),
           ("test_tenants.py::test_tenant_block_is_transaction_scoped",), fast=True),
    Mutant("tenant-helper-prepares", "tenant() lets psycopg prepare the block's statements (26)",
           (replace("labhelpers/tenants.py", "    conn.prepare_threshold = None\n    try:", "    try:"),),
           ("test_tenants.py::test_tenant_block_never_prepares_and_restores_the_threshold",), fast=True),
)


# --------------------------------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------------------------------


def copy_project(dst: Path, src: Path = PROJECT) -> Path:
    """Copy the project tree (sources, SQL, data, tests; no environments or server data) to ``dst``."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*IGNORE), symlinks=True)
    return dst


def mutated_texts(mutant: Mutant, root: Path) -> dict[Path, str]:
    """The new text of every file ``mutant`` changes under ``root``. Raise MutantRot if it does not apply."""
    texts: dict[Path, str] = {}
    for e in mutant.edits:
        path = root / e.path
        if path not in texts:
            if not path.is_file():
                raise MutantRot(f"{mutant.name}: {e.path} does not exist")
            texts[path] = path.read_text(encoding="utf-8")
        if e.old is None:
            texts[path] = texts[path].rstrip("\n") + "\n" + e.new
            continue
        n = texts[path].count(e.old)
        if n != 1:
            first = e.old.strip().splitlines()[0][:70]
            raise MutantRot(f"{mutant.name}: {e.path}: the text to replace ({first!r}...) occurs {n} times, not once: "
                            f"the file changed, update the mutant in tests/mutants.py")
        texts[path] = texts[path].replace(e.old, e.new)
    return texts


def apply(mutant: Mutant, root: Path) -> None:
    """Apply ``mutant`` to the copy at ``root``. Raise MutantRot if it does not apply."""
    for path, text in mutated_texts(mutant, root).items():
        path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the tests did with one mutant (or with the unmutated baseline, ``mutant`` None).

    ``status``: ``caught`` (a test failed), ``SURVIVED`` (every test passed), ``build failed`` (the mutant
    breaks the build: a bad mutant, not a catch), ``error`` (pytest itself failed), ``passed`` (baseline).
    """

    mutant: Mutant | None
    status: str
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    detail: str = ""

    @property
    def name(self) -> str:
        return self.mutant.name if self.mutant else "(baseline: no mutant)"

    @property
    def ok(self) -> bool:
        return self.status == ("passed" if self.mutant is None else "caught")

    @property
    def as_expected(self) -> bool:
        """Caught by one of the tests the mutant names (else the list should say which test does)."""
        if self.mutant is None:
            return False
        named = set(self.mutant.caught_by)
        # a named test without parameters stands for all of its parametrised cases
        return any(f in named or f.split("[")[0] in named for f in self.failed)


def test_server_dsn() -> str:
    """The shared test server's admin DSN: ``LAB_TEST_DSN``, else the embedded ``.lab/test-pgdata`` (started if down)."""
    external = os.environ.get("LAB_TEST_DSN")
    if external:
        return external
    sys.path.insert(0, str(PROJECT))
    from labhelpers import db

    server = db.EmbeddedServer(PROJECT / ".lab" / "test-pgdata", int(os.environ.get("LAB_TEST_PORT", "54339")))
    server.up()
    return server.dsn("postgres")


test_server_dsn.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def _env(root: Path, dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_DSN", "DATABASE_URL", "PYTEST_ADDOPTS", "PYTHONPATH")}
    env.update(LAB_TEST_DSN=dsn, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    return env


def check_imports_from(root: Path, dsn: str) -> None:
    """Make sure a Python started in the copy imports the copy's labhelpers, not the project's (editable install)."""
    out = subprocess.run([sys.executable, "-c", "import labhelpers; print(labhelpers.__file__)"], cwd=root,
                         env=_env(root, dsn), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the scratch copy imports labhelpers from {out}, not from {root}: the mutants would not be tested")


def _pytest(root: Path, targets: Sequence[str], dsn: str, tag: str) -> tuple[int, list[tuple[str, str, str]], str]:
    """Run pytest in the copy; return its exit code, the (node id, kind, message) of each failure/error, the log."""
    xml = root / f".junit-{tag}.xml"
    cmd = [sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider", "-q", "--no-header", "-rN",
           f"--junitxml={xml}", *targets]
    proc = subprocess.run(cmd, cwd=root, env=_env(root, dsn), capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (root / f".pytest-{tag}.log").write_text(log)
    problems = []
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
            for kind in ("failure", "error"):
                for el in case.findall(kind):
                    problems.append((node.removeprefix("tests/"), kind, (el.get("message") or "") + "\n" + (el.text or "")))
    return proc.returncode, problems, log


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:160]


def run_one(mutant: Mutant | None, base: Path, workdir: Path, dsn: str, *, full: bool = False,
            catchers: Sequence[str] = ()) -> Outcome:
    """Copy ``base``, apply ``mutant`` and test it; ``mutant`` None: the baseline, which runs ``catchers``
    (node ids relative to ``tests/``) on the unmutated copy."""
    started = time.monotonic()
    name = mutant.name if mutant else "baseline"
    root = workdir / name
    shutil.copytree(base, root, symlinks=True)
    if mutant is not None:
        apply(mutant, root)
    stages: list[list[str]] = []
    if mutant is None:
        stages.append([f"tests/{c}" for c in catchers])
    else:
        if mutant.caught_by and not full:
            stages.append([f"tests/{c}" for c in mutant.caught_by])
        stages.append(list(TEST_FILES))
    for i, targets in enumerate(stages):
        if not targets:  # pytest without targets would run the whole suite
            continue
        code, problems, log = _pytest(root, targets, dsn, f"{i}")
        if code == 0:
            continue
        if code in (4, 5):  # usage error / nothing collected: a test the list names is gone
            raise MutantRot(f"{name}: pytest could not run {' '.join(targets)}: {_first_line(log.split('ERROR', 1)[-1])}")
        failed = [n for n, kind, _ in problems if kind == "failure"]
        errors = [(n, msg) for n, kind, msg in problems if kind == "error"]
        seconds = time.monotonic() - started
        if mutant is None:
            return Outcome(None, "FAILED", failed + [n for n, _ in errors], seconds, _first_line(log[-2000:]))
        if failed:
            msg = next(m for n, k, m in problems if k == "failure")
            return Outcome(mutant, "caught", failed, seconds, _first_line(msg))
        if errors and any("StageError" in m for _, m in errors):
            return Outcome(mutant, "build failed", [n for n, _ in errors], seconds,
                           _first_line(next(m for _, m in errors if "StageError" in m).split("StageError", 1)[-1]))
        if errors:  # a fixture failed on the mutated schema: the tests did catch it
            return Outcome(mutant, "caught", [n for n, _ in errors], seconds, "error: " + _first_line(errors[0][1]))
        return Outcome(mutant, "error", [], seconds, f"pytest exit code {code}: {_first_line(log[-2000:])}")
    return Outcome(mutant, "passed" if mutant is None else "SURVIVED", [], time.monotonic() - started)


def run(mutants: Sequence[Mutant], *, dsn: str | None = None, jobs: int = 2, full: bool = False,
        baseline: bool = True, keep: bool = False, progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run each mutant alone in a scratch copy of the project; return their outcomes (baseline first, if run).

    :param dsn: the test server's admin DSN (default `test_server_dsn`).
    :param jobs: mutants tested at the same time.
    :param full: ignore `Mutant.caught_by`: every mutant runs `TEST_FILES` until the first failure.
    :param baseline: also run every catching test on the unmutated copy (they must pass there).
    :param keep: keep the scratch directory (its path is printed) instead of deleting it.
    Raise MutantRot, before running anything, if a mutant does not apply to the current tree.
    """
    workdir = Path(tempfile.mkdtemp(prefix="lab-mutants-"))
    try:
        base = copy_project(workdir / "base")
        for m in mutants:
            mutated_texts(m, base)  # every mutant applies, or nothing runs
        dsn = dsn or test_server_dsn()
        check_imports_from(base, dsn)
        todo: list[Mutant | None] = ([None] if baseline and any(m.caught_by for m in mutants) else []) + list(mutants)

        catchers = sorted({c for m in mutants for c in m.caught_by})

        def one(m: Mutant | None) -> Outcome:
            out = run_one(m, base, workdir, dsn, full=full, catchers=catchers)
            if progress:
                progress(out)
            return out

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(one, todo))
    finally:
        if keep:
            print(f"scratch copies kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def report(outcomes: Sequence[Outcome], seconds: float, jobs: int) -> str:
    """A Markdown table: mutant, the mistake, the tests that failed, seconds; then the totals."""
    rows = ["| mutant | mistake | caught by (first failing test) | s |", "|---|---|---|---:|"]
    for o in outcomes:
        if o.mutant is None:
            verdict = "all catching tests pass" if o.ok else f"**FAILED**: {', '.join(o.failed) or o.detail}"
            rows.append(f"| {o.name} | - | {verdict} | {o.seconds:.0f} |")
            continue
        if o.status == "caught":
            verdict = ", ".join(f"`{f}`" for f in o.failed) + ("" if o.as_expected else " (not the test the list names)")
        else:
            verdict = f"**{o.status}**" + (f": {o.detail}" if o.detail else "")
        rows.append(f"| {o.name} | {o.mutant.mistake} | {verdict} | {o.seconds:.0f} |")
    mutants = [o for o in outcomes if o.mutant is not None]
    caught = sum(o.ok for o in mutants)
    rows.append("")
    rows.append(f"{caught} of {len(mutants)} mutants caught, in {seconds:.0f} s ({jobs} at a time).")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply each mutant alone to a scratch copy and run the isolation tests.")
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--fast", action="store_true", help="only the CI subset")
    parser.add_argument("--full", action="store_true", help="run every test file until the first failure, not the named catchers")
    parser.add_argument("--jobs", type=int, default=2, help="mutants at a time (default 2)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the catching tests")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if (not args.names or m.name in args.names) and (m.fast or not args.fast)]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    if args.list:
        for m in chosen:
            print(f"{m.name:38} {'fast ' if m.fast else '     '}{m.mistake}")
        return 0
    started = time.monotonic()

    def progress(o: Outcome) -> None:
        print(f"{o.name:38} {o.status:12} {o.seconds:5.0f} s  {', '.join(o.failed)[:90]}", file=sys.stderr, flush=True)

    try:
        outcomes = run(chosen, jobs=args.jobs, full=args.full, baseline=not args.no_baseline, keep=args.keep,
                       progress=progress)
    except MutantRot as e:
        print(f"mutants: {e}", file=sys.stderr)
        return 2
    text = report(outcomes, time.monotonic() - started, args.jobs)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Mutants ({time.strftime('%Y-%m-%d %H:%M')})\n\n{text}\n")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
