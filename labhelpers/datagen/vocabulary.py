"""The words generated rows are made of: names, companies, titles, subjects, and weighted choices.

Plain data: the generation SQL (`statements`) builds these lists into its text as array literals, and the
custom field values (`custom_fields`) draw from them too.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "COMPANY_A", "COMPANY_B", "FIRST", "LAST", "PRODUCTS", "STAGE_OLD", "STAGE_RECENT", "SUBJECT", "TITLES",
    "TYPE_WEIGHTS", "WORDS", "mail",
]

FIRST = ("Ada", "Alan", "Barbara", "Brian", "Carla", "Chen", "Dana", "David", "Elena", "Emeka", "Fatima", "Frank",
         "Grace", "Hiro", "Ines", "Ivan", "Jamal", "Julia", "Kenji", "Laura", "Liam", "Maria", "Mohammed", "Nadia",
         "Noah", "Olga", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Sofia", "Tariq", "Uma", "Victor", "Wei",
         "Xavier", "Yara", "Zoe", "Pablo")
LAST = ("Smith", "Garcia", "Chen", "Okafor", "Müller", "Rossi", "Tanaka", "Kowalski", "Silva", "Nguyen", "Patel",
        "Johnson", "Brown", "Dubois", "Ivanova", "Haddad", "Kim", "Larsen", "Moreau", "Novak", "O'Brien", "Perez",
        "Quispe", "Reyes", "Sato", "Schmidt", "Singh", "Torres", "Usman", "Varga", "Walsh", "Yilmaz", "Zhang",
        "Andersen", "Bianchi", "Costa", "Diaz", "Eriksen", "Fischer", "Gomez")
COMPANY_A = ("North", "Blue", "Bright", "Iron", "Silver", "Green", "Rapid", "Prime", "Summit", "Cedar", "Atlas",
             "Nova", "Pioneer", "Harbor", "Granite", "Vertex", "Lumen", "Orbit", "Crest", "Delta")
COMPANY_B = ("Labs", "Systems", "Logistics", "Health", "Foods", "Capital", "Media", "Energy", "Works", "Retail",
             "Analytics", "Robotics", "Partners", "Studios", "Motors", "Bank", "Pharma", "Networks", "Textiles", "Air")
TITLES = ("CEO", "CTO", "CFO", "VP Sales", "Head of Marketing", "Engineer", "Senior Engineer", "Buyer",
          "Procurement Manager", "Analyst", "Office Manager", "Founder", "Product Manager", "Consultant",
          "Operations Lead", "Account Executive", "Designer", "Director of IT", "HR Manager", "Accountant")
WORDS = ("alpha", "bravo", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper", "kepler",
         "lumen", "maple", "nimbus", "onyx", "pine", "quartz", "raven", "sierra", "tango", "umber", "vega",
         "willow", "xenon", "yonder", "zephyr")
PRODUCTS = ("licenses", "renewal", "upgrade", "services", "pilot", "expansion", "support plan")
# Activity subjects: five per activity type.
SUBJECT = {
    "call": ("Discovery call", "Follow-up call", "Pricing call", "Check-in call", "Renewal call"),
    "email": ("Sent proposal", "Intro email", "Follow-up email", "Contract sent", "Newsletter reply"),
    "meeting": ("Kickoff meeting", "Quarterly review", "On-site visit", "Negotiation meeting", "Lunch meeting"),
    "note": ("Note: budget", "Note: decision maker", "Note: competitor", "Note: timeline", "Note: objections"),
    "task": ("Prepare quote", "Send contract", "Schedule demo", "Update CRM", "Call back"),
    "sms": ("SMS reminder", "SMS confirmation", "SMS follow-up", "SMS intro", "SMS thanks"),
    "demo": ("Product demo", "Technical demo", "Executive demo", "Pilot demo", "Feature walkthrough"),
}
# Weighted choices (see `expressions.choice_sql`): activity types, and lead stages of recent and old leads.
TYPE_WEIGHTS = {"email": 30, "call": 25, "note": 15, "task": 12, "meeting": 10, "sms": 5, "demo": 3}
STAGE_RECENT = {"new": 35, "qualified": 25, "proposal": 15, "negotiation": 10, "won": 8, "lost": 7}
STAGE_OLD = {"new": 4, "qualified": 6, "proposal": 5, "negotiation": 5, "won": 38, "lost": 42}


def mail(name: str) -> str:
    """A name as it appears in an e-mail address: lower case ASCII, no spaces or quotes."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return ascii_name.lower().replace(" ", "-").replace("'", "")
