"""`labhelpers db ...`: the embedded server's lifecycle, the URL, reset, psql."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import click

from .. import db
from ..errors import LabError
from ._base import LabGroup, cli, dsn_option


@cli.group(cls=LabGroup)
def db_group() -> None:
    """The database: the embedded server's lifecycle, its URL, reset, psql.

    Example: labhelpers db up
    """


cli.add_command(db_group, name="db")


def _port_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--port", type=click.IntRange(1, 65535), default=None, help="TCP port on 127.0.0.1 (default $LAB_PORT or 54329)."
    )(f)


@db_group.command("up")
@_port_option
def db_up(port: int | None) -> None:
    """Start the embedded PostgreSQL server (idempotent) and create the lab database.

    Example: labhelpers db up
    """
    server = db.embedded_server(port=port)
    started = server.up()
    state = "started" if started else "already running"
    click.echo(f"embedded PostgreSQL {db.PG_MAJOR} {state}: {db.redact(server.dsn())}")


@db_group.command("down")
def db_down() -> None:
    """Stop the embedded server (data is kept).

    Example: labhelpers db down
    """
    server = db.embedded_server()
    server.down()
    click.echo(f"embedded server stopped (data kept in {server.pgdata})")


@db_group.command("status")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def db_status(dsn: str | None, as_json: bool) -> None:
    """Show the resolved server: running or not, version, DSN, tuned settings.

    Example: labhelpers db status
    """
    st = db.status(dsn)
    if as_json:
        click.echo(json.dumps({**st.__dict__, "dsn": db.redact(st.dsn), "pgdata": str(st.pgdata or "")}, indent=2))
    else:
        kind = "embedded" if st.embedded else "external"
        click.echo(f"server:   {kind}, {'running' if st.running else 'not running'}")
        click.echo(f"dsn:      {db.redact(st.dsn)}")
        if st.pgdata:
            click.echo(f"pgdata:   {st.pgdata}")
        if st.version:
            click.echo(f"version:  PostgreSQL {st.version}")
        for name, value in st.settings.items():
            click.echo(f"  {name:<32} {value}")
    if not st.running:
        sys.exit(1)


@db_group.command("url")
@dsn_option
def db_url(dsn: str | None) -> None:
    """Print the administrator's DSN and nothing else (starts the embedded server if needed).

    Example: psql "$(labhelpers db url)"
    """
    click.echo(db.resolve_dsn(dsn))


@db_group.command("reset")
@dsn_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_reset(dsn: str | None, yes: bool) -> None:
    """Drop and recreate the lab database: the only destructive command.

    Example: labhelpers db reset --yes
    """
    target = db.resolve_dsn(dsn)
    if not yes:
        click.confirm(f"Drop every table and row in database {db.dbname_of(target)}?", abort=True)
    click.echo(db.reset_database(target))


@db_group.command("psql", context_settings={"ignore_unknown_options": True})
@dsn_option
@click.option("--role", type=click.Choice(db.APP_ROLES), default=None, help="Log in as this application role.")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def db_psql(dsn: str | None, role: str | None, psql_args: tuple[str, ...]) -> None:
    """Open psql on the lab database (extra arguments go to psql).

    Example: labhelpers db psql -c 'SELECT count(*) FROM contacts'
    """
    psql = db.psql_path()
    if psql is None:
        raise LabError(
            "no psql client found: install one (Debian/Ubuntu: apt install postgresql-client; "
            "macOS: brew install libpq) or use the notebooks"
        )
    target = db.resolve_dsn(dsn)
    if role:
        db.connect(target, role=role).close()  # a clear error if the role does not exist yet
        target = db.role_dsn(target, role)
    os.execv(str(psql), [str(psql), target, *psql_args])
