"""labhelpers: the Multi-Tenant Schema Lab's helper package (connection, tenants, stages, plans, timing)."""

from __future__ import annotations

from .db import connect, resolve_dsn
from .errors import LabError

__all__ = ["LabError", "connect", "resolve_dsn"]
