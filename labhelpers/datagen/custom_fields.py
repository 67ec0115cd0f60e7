"""Custom field values: the fragment pools drawn from each tenant's registry.

A ``custom_fields`` value is built by the server as JSON text: ``'{' || concat_ws(',', <fragments>) || '}'``.
Each hot key has a pool of 256 fragments (``'"industry":"tech"'``, or NULL for "absent"), weighted by the
spec below; a row picks one by 8 bits of a hash. Sparse keys share one pool of 8 values per key; a row
picks a few. All pools of all tenants are concatenated into one array bound once per statement
(`Pools.fragments`); `expressions.custom_fields_sql` writes the picks.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .shapes import Shape
from .vocabulary import FIRST, WORDS

__all__ = ["ENTITY", "HOT", "POOL", "SPARSE_PICKS", "Pools", "read_pools"]

POOL = 256           # fragments per hot key and tenant
_SPARSE_VALUES = 8   # fragments per sparse key and tenant
ENTITY = {"contacts": "contact", "leads": "lead", "activities": "activity"}  # table -> registry entity


@dataclass(frozen=True)
class _Hot:
    presence: float
    weights: Mapping[str, float] | None = None  # enum option -> weight (others share what is left)
    numbers: tuple[float, float] | None = None  # (low, high) for numbers: log-uniform


_INDUSTRY = {"tech": 20, "finance": 15, "healthcare": 12, "retail": 12, "manufacturing": 11, "education": 10,
             "media": 10, "energy": 10}
_REGION = {"north_america": 45, "emea": 30, "apac": 15, "latam": 10}
_SOURCE = {"web": 35, "referral": 20, "event": 10, "outbound": 20, "partner": 10, "ads": 5}
# The hot keys of each entity, in the order of their picks (the hash bits they use).
HOT: dict[str, dict[str, _Hot]] = {
    "contact": {
        "industry": _Hot(0.95, _INDUSTRY),
        "status": _Hot(1.0, {"active": 40, "inactive": 25, "prospect": 25, "churned": 10}),
        "priority": _Hot(1.0, {"low": 40, "medium": 35, "high": 20, "urgent": 5}),
        "region": _Hot(0.8, _REGION),
        "source": _Hot(0.7, _SOURCE),
        "score": _Hot(0.6, numbers=(1, 100)),
        "vip": _Hot(0.05, {"true": 1}),
        "employees": _Hot(0.4, numbers=(1, 100_000)),
        "annual_revenue": _Hot(0.3, numbers=(10_000, 1_000_000_000)),
        "birthday": _Hot(0.1),
        "linkedin_url": _Hot(0.25),
    },
    "lead": {
        "industry": _Hot(0.9, _INDUSTRY),
        "priority": _Hot(0.9, {"low": 35, "medium": 40, "high": 20, "urgent": 5}),
        "region": _Hot(0.7, _REGION),
        "source": _Hot(0.7, _SOURCE),
        "probability": _Hot(0.8, numbers=(5, 95)),
        "product_interest": _Hot(0.6, {"starter": 30, "pro": 40, "enterprise": 20, "services": 10}),
        "budget_approved": _Hot(0.3),
        "decision_date": _Hot(0.2),
        "competitor": _Hot(0.15),
    },
    "activity": {
        "priority": _Hot(0.5, {"low": 40, "medium": 40, "high": 15, "urgent": 5}),
        "outcome": _Hot(0.6),
        "channel": _Hot(0.7, {"phone": 30, "email": 40, "video": 15, "in_person": 5, "chat": 10}),
        "sentiment": _Hot(0.4, {"positive": 45, "neutral": 40, "negative": 15}),
        "duration_minutes": _Hot(0.5, numbers=(1, 180)),
        "region": _Hot(0.2),
        "follow_up": _Hot(0.2),
        "follow_up_date": _Hot(0.1),
    },
}
# Hot keys whose values come from the row, not from a pool (leads.value mirrors the column).
_INLINE = {"lead": ("value",)}
# Sparse keys per row: up to this many picks (a row picks 0..max).
SPARSE_PICKS = {"contact": 6, "lead": 4, "activity": 2}


@dataclass(frozen=True)
class _FieldDef:
    key: str
    data_type: str
    options: tuple[str, ...] | None


@dataclass
class Pools:
    """The fragment pool of one entity across the shape's tenants, and where each tenant's part starts."""

    hot_keys: tuple[str, ...]
    fragments: list[str | None] = field(default_factory=list)
    base: dict[int, int] = field(default_factory=dict)        # tenant no -> offset of its hot blocks
    sparse_len: dict[int, int] = field(default_factory=dict)  # tenant no -> fragments in its sparse block


def read_pools(conn: psycopg.Connection, shape: Shape, seed: int) -> dict[str, Pools]:
    """The pools of every entity, from the registry of the shape's tenants (which must exist)."""
    return {entity: _build_pools(entity, _read_registry(conn, shape, entity), seed) for entity in HOT}


def _read_registry(conn: psycopg.Connection, shape: Shape, entity: str) -> dict[int, list[_FieldDef]]:
    """The registry's field definitions of ``entity`` per tenant number, by key."""
    rows = conn.execute(
        "SELECT tenant_id::text, key, data_type, options FROM custom_field_definitions"
        " WHERE tenant_id = ANY(%s::uuid[]) AND entity = %s ORDER BY tenant_id, key",
        ([t.id for t in shape.tenants], entity),
    ).fetchall()
    by_id = {t.id: t.no for t in shape.tenants}
    out: dict[int, list[_FieldDef]] = {t.no: [] for t in shape.tenants}
    for tid, key, data_type, options in rows:
        opts = tuple(str(o) for o in options) if isinstance(options, list) else None
        out[by_id[tid]].append(_FieldDef(key, data_type, opts))
    return out


def _build_pools(entity: str, registry: Mapping[int, Sequence[_FieldDef]], seed: int) -> Pools:
    """Fragments for every tenant: 256 per hot key (weighted, NULL = absent), 8 per sparse key."""
    hot_spec = HOT[entity]
    pools = Pools(hot_keys=tuple(hot_spec))
    for tenant_no, defs in sorted(registry.items()):
        by_key = {d.key: d for d in defs}
        rnd = random.Random(f"{seed}:{tenant_no}:{entity}")
        pools.base[tenant_no] = len(pools.fragments)
        for key, spec in hot_spec.items():
            d = by_key.get(key)
            if d is None:  # not in this tenant's registry: never written
                pools.fragments.extend([None] * POOL)
            else:
                pools.fragments.extend(_hot_block(d, spec, rnd))
        sparse = [d for d in defs if d.key not in hot_spec and d.key not in _INLINE.get(entity, ())]
        start = len(pools.fragments)
        for d in sparse:
            pools.fragments.extend(f'"{d.key}":{v}' for v in _values(d, rnd, _SPARSE_VALUES, None))
        pools.sparse_len[tenant_no] = len(pools.fragments) - start
    return pools


def _hot_block(d: _FieldDef, spec: _Hot, rnd: random.Random) -> list[str | None]:
    """The 256 fragments of a hot key: its values as often as ``spec.presence`` says, else NULL."""
    present = round(spec.presence * POOL)
    values = _values(d, rnd, present, spec)
    rnd.shuffle(values)
    block: list[str | None] = [f'"{d.key}":{v}' for v in values] + [None] * (POOL - present)
    rnd.shuffle(block)  # presence shuffled into the block, so that "absent" is not tied to one value
    return block


# ---- values of each data type, as JSON text ------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _values(d: _FieldDef, rnd: random.Random, count: int, hot: _Hot | None) -> list[str]:
    """``count`` JSON values for a field, distributed as its spec says (weights, number ranges)."""
    if d.data_type == "enum" and d.options:
        return _enum_values(d.options, count, hot)
    if d.data_type == "number":
        lo, hi = hot.numbers if hot and hot.numbers else (1, 10_000)
        return [_json(round(math.exp(rnd.uniform(math.log(lo), math.log(hi))))) for _ in range(count)]
    if d.data_type == "boolean":
        if hot and hot.weights == {"true": 1}:
            return ["true"] * count
        return [rnd.choice(("true", "false")) for _ in range(count)]
    if d.data_type == "date":
        base, span = (dt.date(1960, 1, 1), 15_000) if d.key == "birthday" else (dt.date(2024, 1, 1), 1_100)
        return [_json((base + dt.timedelta(days=rnd.randrange(span))).isoformat()) for _ in range(count)]
    return _text_values(d.key, rnd, count)  # text (and enum without options, which the registry forbids)


def _enum_values(options: Sequence[str], count: int, hot: _Hot | None) -> list[str]:
    """``count`` options in the proportions of their weights (evenly spread: no randomness)."""
    weights = _enum_weights(options, hot)
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    out = []
    for i in range(count):
        u = (i + 0.5) / count
        k = next((j for j, c in enumerate(cum) if u <= c), len(cum) - 1)
        out.append(_json(options[k]))
    return out


def _enum_weights(options: Sequence[str], hot: _Hot | None) -> list[float]:
    """The spec's weight of each option; options the spec does not know share 10% of the mass."""
    spec = hot.weights if hot else None
    weights = [float(spec.get(o, 0)) for o in options] if spec else []
    if not spec or sum(weights) <= 0:
        return [1.0] * len(options)
    unknown = weights.count(0)
    if unknown:
        share = 0.1 * sum(weights) / unknown
        weights = [w or share for w in weights]
    return weights


def _text_values(key: str, rnd: random.Random, count: int) -> list[str]:
    if key == "linkedin_url":
        return [_json(f"https://www.linkedin.com/in/{rnd.choice(FIRST).lower()}-{rnd.randrange(10**6)}")
                for _ in range(count)]
    if key == "competitor":
        return [_json(rnd.choice(("Salesforce", "HubSpot", "Pipedrive", "Zoho", "in-house", "Dynamics")))
                for _ in range(count)]
    return [_json(f"{rnd.choice(WORDS)} {rnd.choice(WORDS)} {rnd.randrange(1000)}") for _ in range(count)]
