"""Shapes: how many tenants, how big, over what time; and the ids of generated rows.

A `Shape` is pure data (no database): the tenants of a scale with their row counts. Everything the
generator writes is a function of the shape, the seed and the run's anchor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LabError

__all__ = [
    "ACTIVITIES_PER_CONTACT", "EPOCH_MS", "GENERATED_ID_MARK", "HISTORY_DAYS", "KIND", "LEADS_PER_CONTACT",
    "RECENCY", "SCALES", "SCENARIO_TENANTS", "Shape", "TenantSpec", "generated_id", "make_shape",
]

# The scenario tenants of data/seed-tenants.sql: same ids, slugs, names and plans.
SCENARIO_TENANTS: tuple[tuple[str, str, str, str], ...] = (
    ("11111111-1111-7111-8111-111111111111", "acme", "Acme Corporation", "enterprise"),
    ("22222222-2222-7222-8222-222222222222", "globex", "Globex Inc.", "pro"),
    ("33333333-3333-7333-8333-333333333333", "initech", "Initech LLC", "starter"),
)
# Further tenants, in order (slug, name, plan).
_MORE_TENANTS: tuple[tuple[str, str, str], ...] = (
    ("hooli", "Hooli", "pro"), ("umbrella", "Umbrella Corp", "enterprise"), ("stark", "Stark Industries", "pro"),
    ("wayne", "Wayne Enterprises", "enterprise"), ("cyberdyne", "Cyberdyne Systems", "starter"),
    ("soylent", "Soylent Co", "starter"), ("tyrell", "Tyrell Corporation", "pro"),
    ("wonka", "Wonka Industries", "free"), ("vandelay", "Vandelay Industries", "free"),
    ("dunder", "Dunder Mifflin", "starter"), ("oscorp", "Oscorp", "pro"), ("massive", "Massive Dynamic", "enterprise"),
    ("aperture", "Aperture Science", "pro"), ("gringotts", "Gringotts", "starter"),
    ("nakatomi", "Nakatomi Trading", "free"), ("pied-piper", "Pied Piper", "free"),
)
_MAX_TENANTS = len(SCENARIO_TENANTS) + len(_MORE_TENANTS)
_MAX_CONTACTS = 50_000_000

# Contacts per tenant, largest first. Leads = 0.5 and activities = 4 per contact.
SCALES: dict[str, tuple[int, ...]] = {
    "tiny": (300, 150, 60, 40),
    "small": (10_000, 10_000, 10_000),
    "medium": (100_000, 40_000, 20_000, 12_000, 8_000, 5_000, 3_000, 2_000, 1_000, 500),
    "large": (1_000_000, 250_000, 100_000, 60_000, 40_000, 25_000, 15_000, 8_000, 4_000, 2_000),
    # One tenant with 10M+ records across its tables: 2.2M contacts + 1.1M leads + 8.8M activities.
    "xl": (2_200_000, 50_000, 10_000),
}
LEADS_PER_CONTACT = 0.5
ACTIVITIES_PER_CONTACT = 4
HISTORY_DAYS = 730          # 24 months of history before the anchor
RECENCY = 1.15              # > 1: denser towards the anchor (about 6% of rows in the last 30 days)
GENERATED_ID_MARK = "75ed-a1ab"  # substr(id::text, 15, 9) of every generated row
EPOCH_MS = 1_704_067_200_000  # 2024-01-01 00:00:00+00: tenants and users are dated from here
KIND = {"tenant": 0, "user": 1, "contact": 2, "lead": 3, "activity": 4}  # in the ids' bits
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class TenantSpec:
    """One tenant of a shape: its number (1-based), id, slug, name, plan and row counts."""

    no: int
    id: str
    slug: str
    name: str
    plan: str
    contacts: int
    leads: int
    activities: int
    users: int

    @property
    def rows(self) -> int:
        """Rows this tenant gets across its tables."""
        return self.contacts + self.leads + self.activities + self.users


@dataclass(frozen=True)
class Shape:
    """What a seed loads: a scale name and its tenants."""

    scale: str
    tenants: tuple[TenantSpec, ...]

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table."""
        return {
            "tenant_users": sum(t.users for t in self.tenants),
            "contacts": sum(t.contacts for t in self.tenants),
            "leads": sum(t.leads for t in self.tenants),
            "activities": sum(t.activities for t in self.tenants),
        }

    @property
    def total_rows(self) -> int:
        """Rows across all tables."""
        return sum(self.rows.values())

    def key(self, seed: int) -> str:
        """A short fingerprint of this shape and seed: equal keys load equal data."""
        text = json.dumps([seed, [dataclasses.astuple(t) for t in self.tenants]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_json(self) -> list[dict[str, Any]]:
        """The tenants as plain dicts (stored in ``lab_seed_runs.shape``)."""
        return [dataclasses.asdict(t) for t in self.tenants]


def generated_id(kind: str, tenant_no: int, n: int, ms: int) -> str:
    """The id of generated row ``n`` of ``kind`` (the Python twin of `expressions.id_sql`)."""
    h = f"{ms:012x}75eda1ab{KIND[kind]:x}{tenant_no:02x}{n:09x}"
    return str(uuid.UUID(h))


def make_shape(scale: str | None = "small", *, tenants: int | None = None, contacts: int | None = None) -> Shape:
    """The tenants of a named scale, or of a custom one.

    :param scale: ``tiny``, ``small``, ``medium``, ``large`` or ``xl`` (see `SCALES`), or None for custom.
    :param tenants: number of tenants (custom shape; the sizes then fall off as 1/i^1.3 from the largest).
    :param contacts: contacts of the largest tenant (custom shape).
    Returns the `Shape`; its ``scale`` is the name, or ``custom`` when ``tenants``/``contacts`` change it.
    Raise LabError if the scale is unknown or the numbers are out of range.
    """
    if tenants is None and contacts is None:
        if scale not in SCALES:
            raise LabError(f"unknown scale {scale!r}; expected one of: {', '.join(SCALES)}")
        return Shape(scale=scale, tenants=_tenant_specs(SCALES[scale]))
    return Shape(scale="custom", tenants=_tenant_specs(_custom_sizes(scale, tenants, contacts)))


def _custom_sizes(scale: str | None, tenants: int | None, contacts: int | None) -> list[int]:
    """Contacts per tenant of a custom shape: ``tenants`` of them, the largest ``contacts``."""
    base = list(SCALES.get(scale or "small", SCALES["small"]))
    n = tenants if tenants is not None else len(base)
    top = contacts if contacts is not None else base[0]
    if not 1 <= n <= _MAX_TENANTS:
        raise LabError(f"--tenants must be between 1 and {_MAX_TENANTS}")
    if not 1 <= top <= _MAX_CONTACTS:
        raise LabError(f"--contacts must be between 1 and {_MAX_CONTACTS:,}")
    if scale == "small" or (scale not in SCALES and scale is not None):
        return [top] * n  # equal tenants
    return [max(min(top, 50), round(top / (i + 1) ** 1.3)) for i in range(n)]


def _tenant_specs(sizes: Sequence[int]) -> tuple[TenantSpec, ...]:
    """The scenario tenants first, then the further ones, with ``sizes`` contacts each."""
    names: list[tuple[str, str, str, str | None]] = [(s, name, plan, tid) for tid, s, name, plan in SCENARIO_TENANTS]
    names += [(slug, name, plan, None) for slug, name, plan in _MORE_TENANTS]
    specs = []
    for no, (contacts, (slug, name, plan, fixed_id)) in enumerate(zip(sizes, names), start=1):
        specs.append(TenantSpec(
            no=no, id=fixed_id or generated_id("tenant", no, no, EPOCH_MS + no * _DAY_MS), slug=slug, name=name,
            plan=plan, contacts=contacts, leads=round(contacts * LEADS_PER_CONTACT),
            activities=contacts * ACTIVITIES_PER_CONTACT, users=_users_for(contacts),
        ))
    return tuple(specs)


def _users_for(contacts: int) -> int:
    """Users of a tenant with ``contacts`` contacts: one per 500, from 5 to 500."""
    return max(5, min(500, contacts // 500))
