"""The `labhelpers` command through click's CliRunner, asserting real state."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner

from labhelpers import db
from labhelpers.cli import cli


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env, input=input)


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_command_has_help_with_an_example() -> None:
    for path, command in all_commands(cli):
        assert command.help, f"labhelpers {' '.join(path)} has no help"
        assert "Example:" in command.help, f"labhelpers {' '.join(path)} has no example"


def test_every_command_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for path, command in all_commands(cli):
        if not isinstance(command, click.Group):
            assert f"labhelpers {' '.join(path)}" in readme, f"README does not mention labhelpers {' '.join(path)}"


@pytest.fixture
def lab_env(tmp_path: Path):  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"LAB_PGDATA": str(tmp_path / "pgdata"), "LAB_PORT": str(port), "LAB_DSN": "", "DATABASE_URL": ""}
    yield env
    server = db.EmbeddedServer(tmp_path / "pgdata", port)
    if server.is_running():
        server.down()


def test_db_lifecycle(lab_env: dict[str, str]) -> None:
    up = run("db", "up", env=lab_env)
    assert up.exit_code == 0, up.output
    assert "started" in up.output
    again = run("db", "up", env=lab_env)
    assert again.exit_code == 0 and "already running" in again.output

    url = run("db", "url", env=lab_env)
    assert url.exit_code == 0
    dsn = url.output.strip()
    assert "\n" not in dsn
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "mastery_lab"

    status = run("db", "status", env=lab_env)
    assert status.exit_code == 0
    assert "running" in status.output and "18." in status.output and "shared_buffers" in status.output
    assert "postgres_password" not in status.output

    down = run("db", "down", env=lab_env)
    assert down.exit_code == 0
    assert not db.EmbeddedServer(Path(lab_env["LAB_PGDATA"]), int(lab_env["LAB_PORT"])).is_running()
    assert Path(lab_env["LAB_PGDATA"], "PG_VERSION").exists(), "down must keep the data"

    again = run("db", "down", env=lab_env)
    assert again.exit_code == 1
    assert "not running" in again.output and "Traceback" not in again.output

    stopped = run("db", "status", env=lab_env)
    assert stopped.exit_code == 1 and "not running" in stopped.output


def test_reset_asks_then_drops(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    declined = run("db", "reset", "--dsn", fresh_dsn, input="n\n")
    assert declined.exit_code == 1
    with psycopg.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone()[0] == "t"
    done = run("db", "reset", "--dsn", fresh_dsn, "--yes")
    assert done.exit_code == 0 and "dropped database" in done.output
    with psycopg.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone()[0] is None


@pytest.mark.parametrize(
    "dsn, message",
    [
        ("postgresql://postgres:postgres_password@127.0.0.1:1/mastery_lab", "nothing listens there"),
        ("host=x port", "invalid DSN"),
    ],
)
def test_bad_dsn_is_one_line_and_exit_1(dsn: str, message: str) -> None:
    result = run("db", "url", "--dsn", dsn) if "invalid" in message else run("db", "status", "--dsn", dsn)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_env_dsn_is_honoured(fresh_dsn: str) -> None:
    result = run("db", "url", env={"LAB_DSN": fresh_dsn})
    assert result.exit_code == 0 and result.output.strip() == fresh_dsn
