"""What every catalog query shares: running a query into a DataFrame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql


__all__ = ["Query", "frame"]

Query = str | sql.SQL | sql.Composed


def frame(conn: psycopg.Connection[Any], query: Query, params: Sequence[Any] | Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``query`` as a DataFrame whose columns are the query's column names."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        cols = [c.name for c in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=cols)
