"""A real PgBouncer in front of a lab server: what "pool-safe" is tested against.

PgBouncer in ``pool_mode = transaction`` hands each transaction of a client to whichever server
connection is free, so session state (a session-level ``SET``, a server-side prepared statement) is
shared between clients. The tests, the notebook's demonstration of that trap and the stress tool start
one here: Debian's ``pgbouncer`` package (bookworm ships 1.18), run as an unprivileged user, listening
on 127.0.0.1 with password (SCRAM) authentication, a fixed pool smaller than the clients.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import db, tenants
from .errors import LabError

__all__ = ["PATTERNS", "PgBouncer", "compare_tenant_patterns", "pgbouncer_binary"]

log = logging.getLogger("labhelpers")


def pgbouncer_binary() -> Path | None:
    """The ``pgbouncer`` program (Debian installs it in /usr/sbin), or None when it is not installed."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """One PgBouncer process forwarding every database of ``server_dsn``'s server.

    :param server_dsn: any DSN of the PostgreSQL server behind it (host and port are taken from it).
    :param workdir: where its configuration, user list, log and pid file go: a new private directory
        under the system's temporary directory by default (an unprivileged user must reach it).
    :param pool_size: server connections per (database, user) pair: ``default_pool_size``.
    :param pool_mode: ``transaction`` (the trap) or ``session``.
    :param users: login -> password accepted from clients and used towards the server.

    Use it as a context manager, or `start` and `stop`. Raise LabError if pgbouncer is not
    installed or does not start.
    """

    server_dsn: str
    workdir: Path | None = None
    pool_size: int = 2
    pool_mode: str = "transaction"
    users: dict[str, str] = field(default_factory=lambda: {
        db.ADMIN_USER: db.ADMIN_PASSWORD, **{r: f"{r}_password" for r in db.APP_ROLES}
    })
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- facts ------------------------------------------------------------------------------------
    def dsn(self, dbname: str, role: str | None = None) -> str:
        """A client DSN through the pooler: the administrator, or a login as ``role``."""
        user = role or db.ADMIN_USER
        return make_conninfo(host="127.0.0.1", port=self.port, dbname=dbname, user=user,
                             password=self.users[user], connect_timeout=10)

    def version(self) -> str:
        """What ``pgbouncer --version`` prints first, e.g. ``PgBouncer 1.18.0``."""
        binary = self._binary()
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "PgBouncer (unknown version)"

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Write the configuration and start PgBouncer; return once it accepts connections."""
        binary = self._binary()
        self.port = self.port or _free_port()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="lab-pgbouncer-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        ini = self._write_config()
        user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
        if user is not None:
            # PgBouncer refuses to run as root; `-u` drops to the same unprivileged user as the server.
            import pwd

            db.ensure_os_user(user)
            uid = pwd.getpwnam(user).pw_uid
            for path in (self.workdir, *self.workdir.iterdir()):
                os.chown(path, uid, -1)
        args = [str(binary), *(["-u", user] if user else []), str(ini)]
        with open(self.workdir / "stderr.log", "wb") as stderr:  # what it says before its log file opens
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        self._wait_ready()
        log.info("%s on 127.0.0.1:%d, pool_mode=%s, pool_size=%d", self.version(), self.port,
                 self.pool_mode, self.pool_size)

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    # ---- internals --------------------------------------------------------------------------------
    def _binary(self) -> Path:
        binary = pgbouncer_binary()
        if binary is None:
            raise LabError("pgbouncer is not installed (Debian: `apt-get install pgbouncer`)")
        return binary

    def _write_config(self) -> Path:
        assert self.workdir is not None
        server = conninfo_to_dict(self.server_dsn)
        host = server.get("host") or "127.0.0.1"
        userlist = self.workdir / "userlist.txt"
        userlist.write_text("".join(f"{_quoted(u)} {_quoted(p)}\n" for u, p in self.users.items()))
        userlist.chmod(0o600)
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={host} port={server.get('port') or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            f"admin_users = {db.ADMIN_USER}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 500\n"
            # psycopg may send these at startup; PgBouncer would otherwise refuse the connection.
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n"
            f"pidfile = {self.workdir / 'pgbouncer.pid'}\n"
        )
        return ini

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                # The admin console answers without a server behind it.
                with psycopg.connect(self.dsn("pgbouncer"), autocommit=True, prepare_threshold=None) as conn:
                    conn.execute("SHOW VERSION")
                return
            except psycopg.OperationalError as e:
                last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                time.sleep(0.1)
        assert self.workdir is not None
        tail: list[str] = []
        for name in ("stderr.log", "pgbouncer.log"):
            path = self.workdir / name
            tail = [ln for ln in (path.read_text().splitlines() if path.exists() else []) if "FATAL" in ln][-1:] or tail
        self.stop()
        raise LabError(f"pgbouncer did not start on port {self.port}: {(tail or [last])[0]}")


# --------------------------------------------------------------------------------------------------
# Ways of setting the tenant, compared through one pooler
# --------------------------------------------------------------------------------------------------

_READ = "SELECT tenant_id FROM contacts LIMIT 50"


def _block_session_set(conn: psycopg.Connection[Any], slug: str) -> Iterator[None]:
    tenants.use_tenant(conn, slug)  # the lesson's SET app.current_tenant, for the session
    yield


def _block_raw_local(conn: psycopg.Connection[Any], slug: str, tid: str) -> Iterator[None]:
    with conn.transaction():  # BEGIN; set_config(..., true); ...; COMMIT, written by hand
        conn.execute("SELECT set_config('app.current_tenant', %s, %s)", (tid, True))
        conn.execute("SELECT set_config('app.current_user_id', %s, %s)", ("", True))
        yield


PATTERNS: dict[str, tuple[str, bool]] = {
    # name -> (how the tenant is set, prepared statements allowed on the client connection)
    "session SET (use_tenant)": ("session", False),
    "BEGIN; set_config(..., true); COMMIT -- psycopg default, prepares": ("raw", True),
    "BEGIN; set_config(..., true); COMMIT -- prepare_threshold=None": ("raw", False),
    "with tenant(...) -- psycopg default connection": ("helper", True),
    "with tenant(...) -- db.connect(transaction_pooling=True)": ("helper", False),
}


def _neighbour(dsn: str, slugs: list[str], stop: threading.Event) -> None:
    """Another application on the same pooler: session-level tenants, psycopg's default preparing."""
    rng = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            try:
                tenants.use_tenant(conn, rng.choice(slugs))
                conn.execute("SELECT set_config('app.current_user_id', %s, %s)", ("", False))
                conn.execute("SELECT count(*) FROM contacts")
            except Exception:  # noqa: BLE001 - its own failures are not what is measured
                time.sleep(0.01)


def _client(dsn: str, how: str, prepare: bool, ids: dict[str, str], blocks: int, seed: int,
            out: Counter[str]) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True, **({} if prepare else db.TRANSACTION_POOLING)) as conn:  # type: ignore[arg-type]
        for _ in range(blocks):
            slug = rng.choice(list(ids))
            try:
                if how == "helper":
                    with tenants.tenant(conn, slug):
                        rows = [conn.execute(_READ).fetchall() for _ in range(3)]
                elif how == "raw":
                    with contextmanager(_block_raw_local)(conn, slug, ids[slug]):
                        rows = [conn.execute(_READ).fetchall() for _ in range(3)]
                else:
                    with contextmanager(_block_session_set)(conn, slug):
                        rows = [conn.execute(_READ).fetchall() for _ in range(3)]
                out["blocks"] += 1
                out["foreign_rows"] += sum(1 for batch in rows for (t,) in batch if str(t) != ids[slug])
            except Exception as e:  # noqa: BLE001 - every failure is what is measured
                out["errors"] += 1
                out[f"error: {type(e).__name__}"] += 1


def compare_tenant_patterns(
    admin_dsn: str, *, clients: int = 6, blocks: int = 30, pool_size: int = 2, neighbours: int = 2
) -> pd.DataFrame:
    """Each way of setting the tenant, run by many clients through one real PgBouncer (transaction mode).

    For every pattern of `PATTERNS`: ``clients`` threads as app_user, each running ``blocks`` blocks of
    three reads for a random tenant, while ``neighbours`` other clients set session-level tenants and
    prepare statements on the same pool of ``pool_size`` server connections. Every row read is checked
    against the tenant the block asked for.

    :param admin_dsn: the administrator's DSN of a built and seeded database.
    :returns: one row per pattern: pattern, prepared (allowed on the client), blocks, errors,
        foreign_rows, and the error kinds seen.
    Raise LabError if pgbouncer is not installed.
    """
    with db.connect(admin_dsn, autocommit=True) as admin:
        ids = {slug: str(tid) for slug, tid in admin.execute("SELECT slug, id FROM tenants ORDER BY slug")}
    rows = []
    with PgBouncer(admin_dsn, pool_size=pool_size) as bouncer:
        dsn = bouncer.dsn(db.dbname_of(admin_dsn), "app_user")
        for name, (how, prepare) in PATTERNS.items():
            stop, out = threading.Event(), Counter[str]()
            others = [threading.Thread(target=_neighbour, args=(dsn, list(ids), stop)) for _ in range(neighbours)]
            workers = [threading.Thread(target=_client, args=(dsn, how, prepare, ids, blocks, i, out))
                       for i in range(clients)]
            for t in others + workers:
                t.start()
            for t in workers:
                t.join()
            stop.set()
            for t in others:
                t.join()
            kinds = ", ".join(f"{k[7:]} {v}" for k, v in sorted(out.items()) if k.startswith("error: "))
            rows.append({"pattern": name, "prepared": prepare, "blocks": out["blocks"], "errors": out["errors"],
                         "foreign_rows": out["foreign_rows"], "error kinds": kinds or "-"})
        version = bouncer.version()
    frame = pd.DataFrame(rows)
    frame.attrs["pooler"] = f"{version}, pool_mode=transaction, default_pool_size={pool_size}"
    return frame
