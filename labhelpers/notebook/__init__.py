"""What a notebook's cells call: the setup cell, the ``%sql`` binding, demonstrations that show their SQL.

- `setup`: check the environment, build and load what the notebook needs, connect, bind ``%sql``;
- `sqlmagic`: JupySQL on the notebook's own psycopg connection (why, and how);
- `demos`: the same query as several roles, statements tried and rolled back, what-if changes.
"""

from __future__ import annotations

from ..tenants import Identity, whoami
from .demos import compare_roles, show, try_statements, what_if
from .setup import MIN_PYTHON, REQUIRED_MODULES, check_environment, session, setup
from .sqlmagic import SQL_ALIAS, bind_sql_magic

__all__ = [
    "MIN_PYTHON", "REQUIRED_MODULES", "SQL_ALIAS", "Identity", "bind_sql_magic", "check_environment",
    "compare_roles", "session", "setup", "show", "try_statements", "what_if", "whoami",
]
