"""labhelpers: the Multi-Tenant Schema Lab's helper package.

The public API is its modules, each one concept (DESIGN.md, "labhelpers: one place for each concept"):

- `db`: where the database is and the one `connect`; `tenants`: tenant lookup and context, who am I;
- `catalog`: catalog queries and ``describe``; `stages`: the SQL stage registry and ``build``;
- `datagen`: deterministic data at any scale; `explain`: plans as data; `plots`: drawing only;
- `bench`: timing under a tenant and the lesson's benchmark; `checks`: success criteria and exercise checks;
- `pooler`: a real PgBouncer; `channels`: what a shared role lets a tenant see;
- `notebook`: what the notebooks' cells call; `runner`: notebooks headless with papermill;
- `lesson`: the lesson's verbatim queries and targets; `errors`: `LabError`, the user's mistakes.

Modules load on first use (``from labhelpers import plots`` or ``labhelpers.plots``), so the command line
starts without importing matplotlib or pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

from .db import connect, resolve_dsn
from .errors import LabError

MODULES = (
    "bench", "catalog", "channels", "checks", "datagen", "db", "errors", "explain", "lesson", "notebook",
    "plots", "pooler", "runner", "stages", "tenants",
)

__all__ = ["LabError", "connect", "resolve_dsn", *MODULES]


def __getattr__(name: str) -> Any:
    # PEP 562: `labhelpers.bench` without importing every module at `import labhelpers`.
    if name in MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'labhelpers' has no attribute {name!r}")
