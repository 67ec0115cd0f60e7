"""The catalog queries everyone needs, in one place: tenant tables and partitions, row security,
policies, keys, partition trees and bounds, sizes; and `describe`, a table the way psql's ``\\d+`` shows it.

Each function reads the catalog of the connection's database with the connection's rights (the
administrator's sees everything). Table names are bound as parameters and cast on the server
(``%s::regclass``, ``to_regclass(%s)``), never pasted into the SQL text; the fragments shared between
queries are composed with `psycopg.sql`. Results are DataFrames, one row per object, with the column
names the docstrings list, so the checks, the benchmark and the plots read the same facts the same way.

- `tables`: tenant tables and partitions, row security, policies, keys;
- `partitions`: partition trees, range bounds, sizes;
- `describe`: a table like ``\\d+``.
"""

from __future__ import annotations

from .describe import describe
from .partitions import partition_bounds, partition_sizes, partition_tree, range_end, table_sizes
from .tables import TenantTable, keys, policies, relations, tenant_tables

__all__ = [
    "TenantTable", "describe", "keys", "partition_bounds", "partition_sizes", "partition_tree", "policies",
    "range_end", "relations", "table_sizes", "tenant_tables",
]
