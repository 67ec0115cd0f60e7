"""The tenant helper behind a real PgBouncer in transaction mode (PITFALLS 7, 26).

Debian's pgbouncer (bookworm: 1.18, no prepared-statement support) in ``pool_mode = transaction`` with a
pool of 2 server connections for many clients, in front of the test server, as an unprivileged user.
Skipped with the reason when pgbouncer is not installed (`.ci/run` installs it). About 20 s.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from labhelpers import db, tenants
from labhelpers.pooler import PgBouncer, pgbouncer_binary

ACME = uuid.UUID("11111111-1111-7111-8111-111111111111")
GLOBEX = uuid.UUID("22222222-2222-7222-8222-222222222222")
SLUGS = ("acme", "globex", "initech")
FOREIGN = "SELECT count(*) FROM contacts WHERE tenant_id <> %s"

pytestmark = pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed (apt-get install pgbouncer)")


@pytest.fixture(scope="module")
def bouncer(server_dsn: str) -> Iterator[PgBouncer]:
    with PgBouncer(server_dsn, pool_size=2) as pb:
        yield pb


@pytest.fixture(scope="module")
def app_dsn(bouncer: PgBouncer, shared_built_dsn: str) -> str:
    """app_user's DSN through the pooler, to a built database of this module."""
    return bouncer.dsn(db.dbname_of(shared_built_dsn), "app_user")


def client(dsn: str, *, transaction_pooling: bool) -> psycopg.Connection[Any]:
    options = db.TRANSACTION_POOLING if transaction_pooling else {}
    return psycopg.connect(dsn, autocommit=True, **options)  # type: ignore[arg-type]


def backend(conn: psycopg.Connection[Any]) -> int:
    return conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()[0]  # type: ignore[index]


def test_the_pooler_really_pools(bouncer: PgBouncer, app_dsn: str) -> None:
    """The premise of every test here: transactions of one client land on different server connections."""
    assert bouncer.version().startswith("PgBouncer")
    holder, other = client(app_dsn, transaction_pooling=True), client(app_dsn, transaction_pooling=True)
    with holder, other:
        holder.execute("BEGIN")
        pinned = backend(holder)
        assert backend(other) != pinned, "with one server connection held, the other client gets the second"
        holder.execute("COMMIT")
        seen = {backend(other) for _ in range(20)}
    assert len(seen) <= 2, "the pool never opens more than pool_size server connections"


# --------------------------------------------------------------------------------------------------
# Many clients at once
# --------------------------------------------------------------------------------------------------


def _hostile_neighbour(dsn: str, stop: threading.Event, errors: Counter[str]) -> None:
    """Leaves session-level tenants and prepared statements on every server connection it lands on."""
    with client(dsn, transaction_pooling=False) as conn:
        while not stop.is_set():
            try:
                tenants.use_tenant(conn, random.choice(SLUGS))
                conn.execute("SELECT set_config('app.current_user_id', %s, %s)", ("", False))
                conn.execute("SELECT count(*) FROM contacts")
            except (psycopg.Error, Exception) as e:  # noqa: BLE001 - the neighbour's own failures do not matter
                errors[type(e).__name__] += 1


@pytest.mark.parametrize("transaction_pooling", [True, False], ids=["no-prepare", "default-prepare"])
def test_many_clients_through_the_helper_see_only_their_tenant(
    app_dsn: str, shared_built_dsn: str, transaction_pooling: bool
) -> None:
    """8 clients x 40 blocks with random tenants, beside 2 hostile neighbours, on 2 server connections.

    Even on a connection that prepares by default, no statement inside the block is prepared, so the
    helper's clients see 0 foreign rows and 0 errors either way.
    """
    with db.connect(shared_built_dsn, autocommit=True) as admin:
        ids = dict(admin.execute("SELECT slug, id FROM tenants").fetchall())
    foreign, errors, blocks = Counter[str](), Counter[str](), Counter[str]()
    neighbour_errors: Counter[str] = Counter()
    stop = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with client(app_dsn, transaction_pooling=transaction_pooling) as conn:
            for _ in range(40):
                slug = rng.choice(SLUGS)
                try:
                    with tenants.tenant(conn, slug) as t:
                        for _ in range(3):  # the same statements many times: psycopg would prepare them
                            rows = conn.execute("SELECT tenant_id FROM contacts LIMIT 50").fetchall()
                            foreign[slug] += sum(1 for (tid,) in rows if tid != ids[slug])
                        foreign[slug] += conn.execute(FOREIGN, (t.id,)).fetchone()[0]  # type: ignore[index]
                    blocks[slug] += 1
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    errors[f"{type(e).__name__}: {str(e).strip()[:80]}"] += 1

    neighbours = [threading.Thread(target=_hostile_neighbour, args=(app_dsn, stop, neighbour_errors))
                  for _ in range(2)]
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in neighbours + workers:
        t.start()
    for t in workers:
        t.join(120)
    stop.set()
    for t in neighbours:
        t.join(30)
    assert sum(blocks.values()) == 8 * 40, f"every block ran: {dict(blocks)}; errors: {dict(errors)}"
    assert not errors, f"errors through the helper: {dict(errors)}"
    assert sum(foreign.values()) == 0, f"foreign rows read inside `with tenant(...)`: {dict(foreign)}"


def test_session_level_context_leaks_through_the_same_pooler(app_dsn: str) -> None:
    """The detector works: the lesson's session-level SET behind a transaction pooler reads another tenant."""
    with client(app_dsn, transaction_pooling=True) as a, client(app_dsn, transaction_pooling=True) as b:
        tenants.use_tenant(a, "acme")
        tenants.use_tenant(b, "globex")  # lands on the server connection `a` used: PgBouncer reuses it
        leaked = a.execute(FOREIGN, (ACME,)).fetchone()[0]  # type: ignore[index]
    assert leaked > 0, "client a, which set acme, read globex's contacts"


# --------------------------------------------------------------------------------------------------
# The deterministic swap: a prepared statement's name resolved on another server connection
# --------------------------------------------------------------------------------------------------


@contextmanager
def holding(dsn: str, target: int) -> Iterator[None]:
    """Keep server connection ``target`` busy (a transaction left open on it), so others land elsewhere."""
    opened: list[psycopg.Connection[Any]] = []
    try:
        while True:
            conn = client(dsn, transaction_pooling=True)
            opened.append(conn)
            conn.execute("BEGIN")
            if backend(conn) == target:
                break
            assert len(opened) < 5, "could not reach the server connection to hold"
        for other in opened[:-1]:
            other.execute("COMMIT")
        yield
    finally:
        for conn in opened:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")  # not close(): PgBouncer would drop the server connection
            conn.close()


@contextmanager
def legacy_tenant(conn: psycopg.Connection[Any], key: str) -> Iterator[None]:
    """The helper before the fix, statement for statement: prepared after 5 runs, like any psycopg query."""
    with conn.transaction():
        conn.execute("SELECT to_regprocedure('lab_find_tenant(text)') IS NOT NULL")
        tid = conn.execute("SELECT id, slug, name FROM lab_find_tenant(%(k)s)", {"k": key}).fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT set_config('app.current_tenant', %s, %s)", (str(tid), True))
        conn.execute("SELECT set_config('app.current_user_id', %s, %s)", ("", True))
        yield


def _stage_the_swap(dsn: str, block: Any) -> tuple[psycopg.Connection[Any], int]:
    """Set two server connections up as the issue found them; return the victim client and its target.

    The victim runs ``block(conn, "acme")`` 7 times on S1, so psycopg prepares whatever it can there
    (for the old helper: _pg3_2 = its tenant set_config). S2 holds another
    client's statements of the same names (_pg3_2 = set_config of app.current_user_id, same parameter
    types) and the session-level tenant globex a third client left there.
    """
    with client(dsn, transaction_pooling=True) as a, client(dsn, transaction_pooling=True) as b:
        a.execute("BEGIN"), b.execute("BEGIN")  # a client leaving mid-transaction costs its server connection
        s1, s2 = backend(a), backend(b)
        for conn in (a, b):  # a clean slate: earlier tests' clients left statements and tenants there
            conn.execute("DEALLOCATE ALL")
            conn.execute("SELECT set_config('app.current_tenant', '', false)")
            conn.execute("COMMIT")

    victim = client(dsn, transaction_pooling=False)  # psycopg's default: prepare from the 6th execution
    with holding(dsn, s2):
        for _ in range(7):
            with block(victim, "acme"):
                assert backend(victim) == s1
    with holding(dsn, s1):
        with client(dsn, transaction_pooling=False) as other:
            for sql, params in [
                ("SELECT to_regprocedure('lab_find_tenant(text)') IS NOT NULL", None),
                ("SELECT id, slug, name FROM lab_find_tenant(%(k)s)", {"k": "initech"}),
                ("SELECT set_config('app.current_user_id', %s, %s)", (str(ACME), True)),
                ("SELECT %s::text, %s::bool", ("harmless", True)),
            ]:
                for _ in range(7):
                    with other.transaction():
                        other.execute(sql, params)
                        assert backend(other) == s2
        with client(dsn, transaction_pooling=True) as third:
            third.execute("SELECT set_config('app.current_tenant', %s, false)", (str(GLOBEX),))
            assert backend(third) == s2
    return victim, s1


def test_swap_sequence_reads_another_tenant_with_the_old_helper(app_dsn: str) -> None:
    """The sequence is real: the old helper's set_config runs another client's statement."""
    victim, s1 = _stage_the_swap(app_dsn, legacy_tenant)
    with victim, holding(app_dsn, s1):
        with legacy_tenant(victim, "acme"):
            leaked = victim.execute(FOREIGN, (ACME,), prepare=False).fetchone()[0]  # type: ignore[index]
            in_force = victim.execute("SELECT current_setting('app.current_tenant')", prepare=False).fetchone()[0]  # type: ignore[index]
    assert in_force == str(GLOBEX) and leaked > 0, "the staged swap reproduces the cross-tenant read"


def test_swap_sequence_cannot_move_the_helper(app_dsn: str) -> None:
    """The same sequence against `tenants.tenant`, on a connection that prepares by default: unaffected.

    The victim ran the block 7 times on S1 first: on a default connection psycopg would have prepared
    its statements there, and binding those names on S2 would run the other client's statements.
    """
    victim, s1 = _stage_the_swap(app_dsn, tenants.tenant)
    with victim, holding(app_dsn, s1):
        with tenants.tenant(victim, "acme") as t:
            leaked = victim.execute(FOREIGN, (t.id,)).fetchone()[0]  # type: ignore[index]
            rows = victim.execute("SELECT DISTINCT tenant_id FROM contacts").fetchall()
        assert tenants.current_tenant(victim) == str(GLOBEX), "outside the block: the pooler's session tenant"
    assert leaked == 0 and rows == [(ACME,)]


def test_the_helper_refuses_a_tenant_changed_inside_the_block(app_dsn: str) -> None:
    """A statement of the block that moves the tenant (as a swapped one could) rolls the block back."""
    with client(app_dsn, transaction_pooling=True) as conn:
        with pytest.raises(tenants.LabError, match="changed inside the block"):
            with tenants.tenant(conn, "acme", user="manager@acme.example"):
                conn.execute("INSERT INTO contacts (tenant_id, first_name) VALUES (%s, 'kept?')", (ACME,))
                conn.execute("SELECT set_config('app.current_tenant', %s, false)", (str(GLOBEX),))
        with tenants.tenant(conn, "acme"):
            kept = conn.execute("SELECT count(*) FROM contacts WHERE first_name = 'kept?'").fetchone()[0]  # type: ignore[index]
    assert kept == 0, "the write made before the tenant moved was rolled back"


def test_pooler_in_front_of_nothing_starts_and_clients_get_an_error() -> None:
    with PgBouncer("host=127.0.0.1 port=1") as pb:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pb.dsn("postgres", "app_user"), connect_timeout=3)
