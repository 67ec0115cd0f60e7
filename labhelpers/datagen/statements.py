"""The statements that generate rows: one ``INSERT ... SELECT`` per table, and their parameters.

Each statement writes the rows of every tenant of one part (a time slice) from ``generate_series``; the
values are pure functions of the row number and the hashes (see `expressions`), so the same seed and
anchor give the same rows in any split into parts and with any number of parallel streams.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from .bookkeeping import Part
from .custom_fields import Pools
from .expressions import (
    choice_sql,
    custom_fields_sql,
    from_sql,
    hash_sql,
    id_sql,
    ms_sql,
    owner_sql,
    pick_sql,
    raw_owner_sql,
    text_array,
    user_id_sql,
)
from .shapes import EPOCH_MS, Shape
from .vocabulary import (
    COMPANY_A,
    COMPANY_B,
    FIRST,
    LAST,
    PRODUCTS,
    STAGE_OLD,
    STAGE_RECENT,
    SUBJECT,
    TITLES,
    TYPE_WEIGHTS,
    WORDS,
    mail,
)

__all__ = ["insert_sql", "params", "users_sql"]

_TS = sql.SQL("to_timestamp(h.ms::float8 / 1000)")
_VALUE_FIELD = sql.SQL("{} || r.value").format(sql.Literal('"value":'))  # leads: the custom value mirrors the column
_ANCHOR_TS = sql.SQL("to_timestamp(%(anchor_ms)s::float8 / 1000)")
# Name parts chosen by 8 bits of h1 each: a contact's (and a user's) first and last name, its company.
_FIRST_BITS, _LAST_BITS = "(h1 & 255)", "((h1 >> 8) & 255)"
_COMPANY_A_BITS, _COMPANY_B_BITS = "((h1 >> 16) & 255)", "((h1 >> 24) & 255)"


def insert_sql(table: str, pools: Pools) -> sql.Composed:
    """The statement generating the rows of a part of ``table`` (contacts, leads or activities)."""
    return {"contacts": _contacts_sql, "leads": _leads_sql, "activities": _activities_sql}[table](pools)


def params(shape: Shape, *, seed: int, anchor_ms: int, part: Part | None = None,
           pools: Pools | None = None) -> dict[str, Any]:
    """The parameters of a generator statement: the tenants as arrays, the part's row numbers, the pool."""
    ts = shape.tenants
    bounds = [part.bounds(getattr(t, part.table)) if part else (1, 0) for t in ts]
    return {
        "seed": seed,
        "anchor_ms": anchor_ms,
        "t_no": [t.no for t in ts],
        "t_id": [t.id for t in ts],
        "t_lo": [b[0] for b in bounds],
        "t_hi": [b[1] for b in bounds],
        "t_total": [max(getattr(t, part.table), 1) if part else 1 for t in ts],
        "t_users": [t.users for t in ts],
        "t_contacts": [max(t.contacts, 1) for t in ts],
        "t_leads": [t.leads for t in ts],
        "t_base": [pools.base[t.no] if pools else 0 for t in ts],
        "t_slen": [pools.sparse_len[t.no] if pools else 0 for t in ts],
        "t_slug": [t.slug for t in ts],
        "pool": json.dumps(pools.fragments if pools else []),
    }


def _mail_pick(values: tuple[str, ...], bits: str) -> sql.Composed:
    return pick_sql([mail(x) for x in values], bits)


def _contacts_sql(pools: Pools) -> sql.Composed:
    return sql.SQL("""
INSERT INTO contacts (tenant_id, id, first_name, last_name, email, phone, company, title, owner_id,
                      custom_fields, created_at, updated_at)
SELECT t.id,
       {id},
       CASE WHEN (h1 >> 40) & 63 <> 0 THEN {first} END,
       {last},
       CASE WHEN (h1 >> 46) & 31 <> 0 THEN
           {first_mail} || '.' || {last_mail} || '.' || n || '@' || {company_mail} || '.example' END,
       CASE WHEN (h1 >> 51) & 15 <> 0 THEN '+1 ' || (200 + (h2 & 1023) %% 800) || ' 555 '
           || lpad((((h2 >> 10) & 65535) %% 10000)::text, 4, '0') END,
       {company_a} || ' ' || {company_b},
       CASE WHEN (h1 >> 55) & 7 <> 0 THEN {title} END,
       CASE WHEN (h2 >> 30) & 31 <> 0 THEN {owner} END,
       {custom_fields},
       {ts},
       CASE WHEN (h2 >> 20) & 3 = 0
            THEN least({ts} + ((h2 >> 56) & 255) * interval '1 hour', {anchor_ts})
            ELSE {ts} END
{from_}""").format(
        id=id_sql("contact", "h.ms", "n"),
        first=pick_sql(FIRST, _FIRST_BITS), last=pick_sql(LAST, _LAST_BITS),
        first_mail=_mail_pick(FIRST, _FIRST_BITS), last_mail=_mail_pick(LAST, _LAST_BITS),
        company_mail=sql.SQL(" || ").join(
            [_mail_pick(COMPANY_A, _COMPANY_A_BITS), _mail_pick(COMPANY_B, _COMPANY_B_BITS)]),
        company_a=pick_sql(COMPANY_A, _COMPANY_A_BITS), company_b=pick_sql(COMPANY_B, _COMPANY_B_BITS),
        title=pick_sql(TITLES, "((h1 >> 32) & 255)"),
        owner=user_id_sql(owner_sql("r.u1")),
        custom_fields=custom_fields_sql("contact", pools),
        ts=_TS, anchor_ts=_ANCHOR_TS,
        from_=from_sql("contact", {"u1": raw_owner_sql("h2", 35)}),
    )


def _leads_sql(pools: Pools) -> sql.Composed:
    age_days = "((%(anchor_ms)s::bigint - h.ms) / 86400000.0)"
    stage = sql.SQL("(CASE WHEN {} < 45 THEN {} ELSE {} END)").format(
        sql.SQL(age_days), choice_sql(STAGE_RECENT, "(h1 & 255)"), choice_sql(STAGE_OLD, "(h1 & 255)"))
    value = "((500 + ((h1 >> 8) & 1023) * ((h1 >> 18) & 255) * 3 + ((h1 >> 26) & 99) / 100.0)::numeric(14,2))"
    return sql.SQL("""
INSERT INTO leads (tenant_id, id, contact_id, owner_id, title, stage, value, currency, expected_close_date,
                   closed_at, custom_fields, created_at, updated_at)
SELECT t.id, {id},
       CASE WHEN (h2 & 31) <> 0 THEN {contact_id} END,
       {owner},
       {company} || ' - ' || {product},
       r.stage, r.value, CASE WHEN (h4 >> 58) & 15 = 0 THEN 'EUR' ELSE 'USD' END,
       ({ts} + (20 + (h4 & 127)) * interval '1 day')::date,
       CASE WHEN r.stage IN ('won', 'lost') THEN
           least({ts} + ((h4 >> 8) & 8191) * interval '10 minutes', {anchor_ts}) END,
       {custom_fields},
       {ts}, {ts}
{from_}""").format(
        id=id_sql("lead", "h.ms", "n"),
        contact_id=id_sql("contact", ms_sql("contact", "r.cn", "t.contacts"), "r.cn"),
        owner=user_id_sql(owner_sql("r.u1")),
        company=pick_sql(COMPANY_A, "((h2 >> 52) & 255)"), product=pick_sql(PRODUCTS, "((h2 >> 60) & 15)"),
        custom_fields=custom_fields_sql("lead", pools, inline=[_VALUE_FIELD]),
        ts=_TS, anchor_ts=_ANCHOR_TS,
        from_=from_sql("lead", {"u1": raw_owner_sql("h2", 32), "cn": "(1 + ((h2 >> 8) & 4194303) %% t.contacts)",
                                "stage": stage, "value": value}),
    )


def _activities_sql(pools: Pools) -> sql.Composed:
    subjects = text_array([SUBJECT[t][i] for t in TYPE_WEIGHTS for i in range(5)])
    type_no = sql.SQL("CASE r.type {} END").format(sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(t), sql.Literal(i)) for i, t in enumerate(TYPE_WEIGHTS)))
    bodies = [f"Talked about {a} and {b}; next step: {c}." for a, b, c in
              zip(WORDS, reversed(WORDS), ("demo", "quote", "call", "contract", "review", "pilot") * 5)]
    return sql.SQL("""
INSERT INTO activities (tenant_id, id, type, subject, body, contact_id, lead_id, owner_id, assigned_to,
                        due_at, completed_at, custom_fields, created_at, updated_at)
SELECT t.id, {id}, r.type,
       ({subjects})[1 + 5 * ({type_no}) + ((h1 >> 8) & 255) %% 5] || ' #' || n,
       CASE WHEN (h1 >> 16) & 7 < 3 THEN {body} END,
       CASE WHEN (h2 & 15) <> 0 THEN {contact_id} END,
       CASE WHEN (h2 >> 4) & 3 = 0 AND t.leads > 0 THEN {lead_id} END,
       {owner},
       CASE WHEN r.type = 'task' THEN {assignee} END,
       CASE WHEN r.type IN ('task', 'meeting', 'call', 'demo') AND (h2 >> 52) & 1 = 0
            THEN {ts} + (1 + ((h2 >> 53) & 15)) * interval '1 day' END,
       CASE WHEN (h2 >> 57) & 7 < 5 THEN least({ts} + ((h2 >> 60) & 15) * interval '20 minutes',
                                              {anchor_ts}) END,
       {custom_fields},
       {ts}, {ts}
{from_}""").format(
        id=id_sql("activity", "h.ms", "n"), subjects=subjects, type_no=type_no,
        body=pick_sql(bodies, "((h1 >> 20) & 255)"),
        contact_id=id_sql("contact", ms_sql("contact", "r.cn", "t.contacts"), "r.cn"),
        lead_id=id_sql("lead", ms_sql("lead", "r.ln", "t.leads"), "r.ln"),
        owner=user_id_sql(owner_sql("r.u1")), assignee=user_id_sql(owner_sql("r.u2")),
        custom_fields=custom_fields_sql("activity", pools),
        ts=_TS, anchor_ts=_ANCHOR_TS,
        from_=from_sql("activity", {"u1": raw_owner_sql("h1", 28), "u2": raw_owner_sql("h1", 48),
                                    "cn": "(1 + ((h2 >> 8) & 4194303) %% t.contacts)",
                                    "ln": "(1 + ((h2 >> 30) & 4194303) %% greatest(t.leads, 1))",
                                    "type": choice_sql(TYPE_WEIGHTS, "(h1 & 255)")}),
    )


def users_sql() -> sql.Composed:
    """The statement generating every tenant's users (a few hundred at most: one statement, no parts)."""
    ms = sql.SQL("({}::bigint + t.no * 86400000 + n * 1000)").format(sql.Literal(EPOCH_MS))
    return sql.SQL("""
INSERT INTO tenant_users (tenant_id, id, email, full_name, role, status, created_at, updated_at)
SELECT t.id, {id},
       {first_mail} || '.' || {last_mail} || '.' || n || '@' || t.slug || '.example',
       {first} || ' ' || {last},
       CASE WHEN n = 1 THEN 'admin' WHEN n = 2 THEN 'manager' WHEN n = 3 THEN 'viewer' WHEN n = 4 THEN 'user'
            WHEN n %% 40 = 0 THEN 'admin' WHEN n %% 15 = 0 THEN 'viewer' WHEN n %% 10 = 0 THEN 'manager'
            ELSE 'user' END,
       CASE WHEN n > 4 AND n %% 25 = 0 THEN 'disabled' WHEN n > 4 AND n %% 37 = 0 THEN 'invited' ELSE 'active' END,
       to_timestamp({ms}::float8 / 1000), to_timestamp({ms}::float8 / 1000)
FROM unnest(%(t_no)s::int[], %(t_id)s::uuid[], %(t_users)s::int[], %(t_slug)s::text[]) AS t (no, id, users, slug)
CROSS JOIN LATERAL generate_series(1, t.users) AS n
CROSS JOIN LATERAL (SELECT {h1} AS h1) AS h
""").format(
        id=user_id_sql("n"),
        first_mail=_mail_pick(FIRST, _FIRST_BITS), last_mail=_mail_pick(LAST, _LAST_BITS),
        first=pick_sql(FIRST, _FIRST_BITS), last=pick_sql(LAST, _LAST_BITS), ms=ms,
        h1=hash_sql(1),
    )
