"""Tenant context: lookup, session vs transaction scope, the pool leak and its fix (PITFALLS 7, 8)."""

from __future__ import annotations

import uuid

import pytest
from psycopg_pool import ConnectionPool

from labhelpers import db, tenants
from labhelpers.errors import LabError

ACME = uuid.UUID("11111111-1111-7111-8111-111111111111")
GLOBEX = uuid.UUID("22222222-2222-7222-8222-222222222222")


def foreign_rows(conn, tenant_id: uuid.UUID) -> int:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT count(*) FROM contacts WHERE tenant_id <> %s", (tenant_id,)).fetchone()[0]


@pytest.mark.parametrize("role", [None, "app_user", "app_readonly"])
@pytest.mark.parametrize("key", ["acme", str(ACME), str(ACME).upper()])
def test_find_tenant_by_slug_or_uuid_under_any_role(shared_built_dsn: str, role: str | None, key: str) -> None:
    with db.connect(shared_built_dsn, role=role, autocommit=True) as conn:
        found = tenants.find_tenant(conn, key)
    assert found.id == ACME and found.slug == "acme"


def test_unknown_tenant_is_a_clear_error(shared_built_dsn: str) -> None:
    with db.connect(shared_built_dsn, role="app_user", autocommit=True) as conn:
        with pytest.raises(LabError, match="unknown tenant 'nope'"):
            tenants.use_tenant(conn, "nope")
        assert tenants.current_tenant(conn) is None, "a failed switch must not leave a tenant set"


def test_lookup_before_the_schema_exists_is_a_clear_error(fresh_dsn: str) -> None:
    with db.connect(fresh_dsn, autocommit=True) as conn:
        with pytest.raises(LabError, match="build the schema first"):
            tenants.find_tenant(conn, "acme")


def test_use_tenant_confines_the_session(shared_built_dsn: str) -> None:
    with db.connect(shared_built_dsn, role="app_user", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0, "no tenant: no rows"
        tenants.use_tenant(conn, "acme")
        assert tenants.current_tenant(conn) == str(ACME)
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] > 0
        assert foreign_rows(conn, ACME) == 0
        tenants.use_tenant(conn, GLOBEX)
        assert foreign_rows(conn, GLOBEX) == 0


def test_use_tenant_survives_a_rollback_on_a_transactional_connection(shared_built_dsn: str) -> None:
    with db.connect(shared_built_dsn, role="app_user") as conn:
        tenants.use_tenant(conn, "acme")
        conn.rollback()
        assert tenants.current_tenant(conn) == str(ACME)


def test_user_by_email_is_resolved_inside_the_tenant(shared_built_dsn: str) -> None:
    with db.connect(shared_built_dsn, role="app_user", autocommit=True) as conn:
        tenants.use_tenant(conn, "acme")
        email, user_id = conn.execute("SELECT email, id FROM tenant_users ORDER BY email LIMIT 1").fetchone()
        tenants.use_tenant(conn, "acme", user=email)
        assert conn.execute("SELECT current_setting('app.current_user_id')").fetchone()[0] == str(user_id)
        # Another tenant's user is invisible from globex, so it cannot be impersonated.
        with pytest.raises(LabError, match="unknown user"):
            tenants.use_tenant(conn, "globex", user=email)
        assert tenants.current_tenant(conn) is None, "a failed switch must not leave a tenant set"


def test_tenant_block_is_transaction_scoped(shared_built_dsn: str) -> None:
    with db.connect(shared_built_dsn, role="app_user", autocommit=True) as conn:
        with tenants.tenant(conn, "globex") as t:
            assert t.id == GLOBEX
            assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] > 0
            assert foreign_rows(conn, GLOBEX) == 0
        assert tenants.current_tenant(conn) is None
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_tenant_value_is_bound_not_spliced(shared_built_dsn: str) -> None:
    """PITFALLS 8: an injection attempt is just an unknown tenant."""
    with db.connect(shared_built_dsn, role="app_user", autocommit=True) as conn:
        with pytest.raises(LabError, match="unknown tenant"):
            tenants.use_tenant(conn, "x'; SET app.current_tenant = '22222222-2222-7222-8222-222222222222")
        assert tenants.current_tenant(conn) is None


def test_pool_leak_and_its_fix(shared_built_dsn: str) -> None:
    seen = tenants.demonstrate_pool_leak(db.role_dsn(shared_built_dsn, "app_user"), "acme")
    assert seen["session_set"] > 0, "session-level SET leaks acme's rows to the next client"
    assert seen["transaction_set"] == 0, "transaction-scoped context leaves nothing behind"


def test_pool_connections_come_back_clean_after_tenant_blocks(shared_built_dsn: str) -> None:
    with ConnectionPool(db.role_dsn(shared_built_dsn, "app_user"), min_size=1, max_size=1,
                        kwargs={"autocommit": True}) as pool:
        for slug in ("acme", "globex", "initech"):
            with pool.connection() as conn, tenants.tenant(conn, slug) as t:
                assert tenants.current_tenant(conn) == str(t.id), "inside the block: the tenant asked for"
                assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] > 0
                assert foreign_rows(conn, t.id) == 0
        with pool.connection() as conn:
            assert tenants.current_tenant(conn) is None
            assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_tenant_block_never_prepares_and_restores_the_threshold(shared_built_dsn: str) -> None:
    """PITFALLS 26: nothing inside the block is a server-side prepared statement, even on a default connection."""
    with db.connect(shared_built_dsn, role="app_user", autocommit=True) as conn:
        for _ in range(8):
            with tenants.tenant(conn, "acme"):
                conn.execute("SELECT count(*) FROM contacts")
        assert conn.prepare_threshold == 5, "the connection's own setting is back after the block"
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


def test_transaction_pooling_connection_never_prepares(shared_built_dsn: str) -> None:
    with db.connect(shared_built_dsn, role="app_user", autocommit=True, transaction_pooling=True) as conn:
        assert conn.prepare_threshold is None
        for _ in range(8):
            conn.execute("SELECT count(*) FROM contacts")
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
