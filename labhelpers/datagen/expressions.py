"""The pieces of the generation SQL: per-row hashes, timestamps, ids, owners, weighted choices, custom fields.

Conventions inside the generator statements (one per part, see `statements`):

- ``t``: the tenants, one row each: no, id, lo, hi (row numbers of this slice), total (rows of the table),
  users, contacts, leads, base (pool offset), slen (sparse pool length), slug;
- ``n``: the row number within the tenant and table (1-based);
- ``h1``..``h5``: independent 64-bit hashes of (seed, tenant, table, n); ``ms``: created_at in ms since
  the epoch;
- ``r``: the values derived once per row (owners, referenced rows, the stage...).

The statements are executed with parameters (``%(seed)s``, ``%(anchor_ms)s``, ``%(pool)s`` and the
tenant arrays), so their text writes the modulo operator as ``%%`` (psycopg's escape), and no literal
built into them may contain ``%``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psycopg import sql

from .custom_fields import POOL, SPARSE_PICKS, Pools
from .shapes import EPOCH_MS, HISTORY_DAYS, KIND, RECENCY

__all__ = [
    "choice_sql", "custom_fields_sql", "from_sql", "hash_sql", "id_sql", "ms_sql", "owner_sql", "pick_sql",
    "raw_owner_sql", "text_array", "user_id_sql",
]

Expr = sql.Composable


def text_array(values: Sequence[str]) -> sql.Composed:
    """A ``text[]`` constant of our own strings. Raise ValueError if one holds ``%`` (see the module doc)."""
    if any("%" in v for v in values):
        raise ValueError(f"a literal of a generator statement contains '%': {values}")
    return sql.SQL("{}::text[]").format(sql.Literal(list(values)))


def pick_sql(values: Sequence[str], bits: str) -> sql.Composed:
    """One of ``values``, chosen by the non-negative integer expression ``bits``."""
    return sql.SQL("({})[1 + {} %% {}]").format(text_array(values), sql.SQL(bits), sql.Literal(len(values)))


def choice_sql(weights: Mapping[str, float], x: str) -> Expr:
    """A key of ``weights`` with its probability, from ``x`` uniform in 0..255.

    A CASE over cumulative thresholds: constant time (a 256-slot array of text would cost a walk along
    the array for every row: variable-length array elements have no offsets).
    """
    total = sum(weights.values())
    acc = 0.0
    whens = []
    items = list(weights.items())
    for k, w in items[:-1]:
        acc += w / total
        whens.append(sql.SQL("WHEN {} < {} THEN {}").format(sql.SQL(x), sql.Literal(round(acc * 256)), sql.Literal(k)))
    return sql.SQL("(CASE {} ELSE {} END)").format(sql.SQL(" ").join(whens), sql.Literal(items[-1][0]))


def hash_sql(j: int) -> Expr:
    """Hash ``j`` of row n: ``%(seed)s`` is the seed, t.no the tenant; ``j`` selects an independent stream."""
    return sql.SQL("hashint8extended(n, %(seed)s::bigint * 1000003 + t.no * 1009 + {})").format(sql.Literal(j))


def ms_sql(kind: str, n: str, total: str) -> Expr:
    """created_at (ms) of row ``n`` of ``total``: older rows first, denser towards the anchor."""
    return sql.SQL(
        "(%(anchor_ms)s::bigint - (({days}::float8 * 86400000) * power(1 - ({n}::float8 - 0.5) / {total}::float8,"
        " {recency}))::bigint - (hashint8extended({n}, t.no * 31 + {kind}) & 65535))"
    ).format(days=sql.Literal(HISTORY_DAYS), n=sql.SQL(n), total=sql.SQL(total), recency=sql.Literal(RECENCY),
             kind=sql.Literal(KIND[kind]))


def _int64(v: int) -> int:
    """``v`` (0 <= v < 2**64) as the signed bigint with the same bits."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _expr(e: Expr | str) -> Expr:
    return sql.SQL(e) if isinstance(e, str) else e


def id_sql(kind: str, ms: Expr | str, n: Expr | str) -> Expr:
    """The generated id as UUIDv7 bits: ms (48) | 7 5ed | a1ab | kind (4) | tenant (8) | n (36).

    Built as two bigints sent as bytes (``int8send``), then hex: cheaper than formatting text pieces.
    The Python twin is `shapes.generated_id`.
    """
    lo = _int64((0xA1AB << 48) | (KIND[kind] << 44))
    return sql.SQL(
        "encode(int8send((({ms}) << 16) | 30189) || int8send(({lo}::bigint) | ((t.no)::bigint << 36)"
        " | ({n})::bigint), 'hex')::uuid"
    ).format(ms=_expr(ms), lo=sql.Literal(lo), n=_expr(n))


def user_id_sql(u: Expr | str) -> Expr:
    """Id of generated user ``u`` of tenant t (users are dated from the tenant's creation)."""
    ms = sql.SQL("({}::bigint + t.no * 86400000 + {} * 1000)").format(sql.Literal(EPOCH_MS), _expr(u))
    return id_sql("user", ms, u)


def raw_owner_sql(h: str, shift: int) -> Expr:
    """A user number from 4 to t.users (computed once per row in the lateral ``r``)."""
    return sql.SQL("(4 + ((({}) >> {}) & 1048575) %% greatest(t.users - 3, 1))").format(
        sql.SQL(h), sql.Literal(shift))


def owner_sql(u: str) -> Expr:
    """The user ``u`` if it may own records (a user or manager, active), else the 4th user (a user)."""
    return sql.SQL("(CASE WHEN {u} %% 40 = 0 OR {u} %% 15 = 0 OR {u} %% 25 = 0 THEN 4 ELSE {u} END)").format(
        u=sql.SQL(u))


def custom_fields_sql(entity: str, pools: Pools, inline: Sequence[Expr] = ()) -> Expr:
    """``'{...}'::jsonb`` from the pools: one pick per hot key (8 bits of h3/h4 each), 0..N sparse picks
    (h5: 10 bits each, the count in its top bits); ``inline`` fragments first."""
    picks: list[Expr] = list(inline)
    bits = [(h, s) for h in ("h3", "h4") for s in range(0, 64, 8)]
    for i, _key in enumerate(pools.hot_keys):
        h, s = bits[i]
        picks.append(sql.SQL("(%(pool)s::jsonb ->> (t.base + {} + ((({}) >> {}) & 255))::int)").format(
            sql.Literal(i * POOL), sql.SQL(h), sql.Literal(s)))
    max_picks = SPARSE_PICKS[entity]
    for j in range(max_picks):
        picks.append(sql.SQL(
            "CASE WHEN (((h5 >> 60) & 15) %% {count}) > {j} AND t.slen > 0 THEN"
            " %(pool)s::jsonb ->> (t.base + {nhot} + (((h5 >> {s}) & 1023) %% greatest(t.slen, 1)))::int END"
        ).format(count=sql.Literal(max_picks + 1), j=sql.Literal(j), nhot=sql.Literal(len(pools.hot_keys) * POOL),
                 s=sql.Literal(10 * j)))
    return sql.SQL("({} || concat_ws(',', {}) || {})::jsonb").format(
        sql.Literal("{"), sql.SQL(", ").join(picks), sql.Literal("}"))


_TENANTS_FROM = sql.SQL("""
FROM unnest(%(t_no)s::int[], %(t_id)s::uuid[], %(t_lo)s::bigint[], %(t_hi)s::bigint[], %(t_total)s::bigint[],
            %(t_users)s::int[], %(t_contacts)s::bigint[], %(t_leads)s::bigint[], %(t_base)s::int[],
            %(t_slen)s::int[], %(t_slug)s::text[])
     AS t (no, id, lo, hi, total, users, contacts, leads, base, slen, slug)
CROSS JOIN LATERAL generate_series(t.lo, t.hi) AS n
CROSS JOIN LATERAL (SELECT {h1} AS h1, {h2} AS h2, {h3} AS h3, {h4} AS h4, {h5} AS h5, {ms} AS ms
                    OFFSET 0) AS h
CROSS JOIN LATERAL (SELECT {derived} OFFSET 0) AS r
""")


def from_sql(kind: str, derived: Mapping[str, Expr | str] | None = None) -> Expr:
    """FROM: tenants x row numbers, hashes and created_at once per row (OFFSET 0 keeps the planner from
    copying them into every use), then ``derived`` values (name -> expression over h1..h5, ms)."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(_expr(e), sql.Identifier(name))
        for name, e in (derived or {"_": "0"}).items())
    return _TENANTS_FROM.format(h1=hash_sql(1), h2=hash_sql(2), h3=hash_sql(3), h4=hash_sql(4), h5=hash_sql(5),
                                ms=ms_sql(kind, "n", "t.total"), derived=cols)
