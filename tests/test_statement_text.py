"""One shared application role shares its activity (PITFALLS 27): closed by track_activities = off.

A session of app_user in acme tries every path to the statement text of a session in globex (which
carries a secret literal), and every way to switch statement tracking back on. About 10 s.
"""

from __future__ import annotations

import psycopg
import pytest

from labhelpers import channels, db


@pytest.mark.parametrize("role", db.APP_ROLES)
def test_no_app_role_reads_another_tenants_statement_text(shared_built_dsn: str, role: str) -> None:
    seen = channels.statement_text(shared_built_dsn, observer="acme", victim="globex", role=role)
    assert set(seen["path"]) == set(channels.ACTIVITY_PATHS), "every path was tried"
    assert seen["saw_backend"].all(), "the observer did see the victim's backend: the probe was running"
    assert not seen["saw_secret"].any(), seen[["path", "state", "query"]].to_string()


def test_the_probe_detects_the_leak_when_tracking_is_on(shared_built_dsn: str) -> None:
    """The detector works: as before sql/02 set track_activities = off, every path shows the secret."""
    with channels.tracking_restored(shared_built_dsn, "app_readonly"):
        seen = channels.statement_text(shared_built_dsn, role="app_readonly")
    assert seen["saw_secret"].all(), seen[["path", "state", "query"]].to_string()
    with db.connect(shared_built_dsn, role="app_readonly", autocommit=True) as conn:
        assert conn.execute("SHOW track_activities").fetchone()[0] == "off", "the setting came back"


@pytest.mark.parametrize("role", db.APP_ROLES)
def test_the_roles_cannot_switch_tracking_back_on(shared_built_dsn: str, role: str) -> None:
    with db.connect(shared_built_dsn, role=role, autocommit=True) as conn:
        assert conn.execute("SHOW track_activities").fetchone()[0] == "off"
        for attempt in ("SET track_activities = on", "RESET track_activities",
                        "SELECT set_config('track_activities', 'on', false)",
                        "ALTER ROLE CURRENT_USER SET track_activities = on"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attempt)
        assert conn.execute("SHOW track_activities").fetchone()[0] == "off"
    with pytest.raises(psycopg.OperationalError, match="permission denied to set parameter"):
        psycopg.connect(db.role_dsn(shared_built_dsn, role), options="-c track_activities=on")


def test_catalog_statistics_still_show_the_shape_of_other_tenants(shared_built_dsn: str) -> None:
    """The channels that remain (taught in notebook 02): estimates and partition counts, not rows."""
    shape = channels.catalog_shape(shared_built_dsn, observer="acme")
    estimates = shape["estimates"].set_index("tenant")
    assert estimates.loc["globex", "estimated_rows"] > 0, "the planner's estimate covers every tenant"
    own = shape["own_rows"].iloc[0, 1]
    with db.connect(shared_built_dsn, autocommit=True) as admin:
        acme = admin.execute("SELECT count(*) FROM contacts c JOIN tenants t ON t.id = c.tenant_id"
                             " WHERE t.slug = 'acme'").fetchone()[0]
    assert own == acme, "while RLS lets the session count only its own rows"
