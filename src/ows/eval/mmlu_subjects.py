"""The 57 MMLU subjects and the 4 categories they are reported in (Hendrycks et al., 2021, categories.py)."""

from __future__ import annotations

CATEGORIES = ("humanities", "stem", "social_sciences", "other")

_BY_CATEGORY = {
    "stem": (
        "abstract algebra", "anatomy", "astronomy", "college biology", "college chemistry",
        "college computer science", "college mathematics", "college physics", "computer security",
        "conceptual physics", "electrical engineering", "elementary mathematics", "high school biology",
        "high school chemistry", "high school computer science", "high school mathematics",
        "high school physics", "high school statistics", "machine learning",
    ),
    "humanities": (
        "formal logic", "high school european history", "high school us history", "high school world history",
        "international law", "jurisprudence", "logical fallacies", "moral disputes", "moral scenarios",
        "philosophy", "prehistory", "professional law", "world religions",
    ),
    "social_sciences": (
        "econometrics", "high school geography", "high school government and politics",
        "high school macroeconomics", "high school microeconomics", "high school psychology", "human sexuality",
        "professional psychology", "public relations", "security studies", "sociology", "us foreign policy",
    ),
    "other": (
        "business ethics", "clinical knowledge", "college medicine", "global facts", "human aging", "management",
        "marketing", "medical genetics", "miscellaneous", "nutrition", "professional accounting",
        "professional medicine", "virology",
    ),
}

SUBJECT_CATEGORY: dict[str, str] = {s: c for c, subjects in _BY_CATEGORY.items() for s in subjects}


def normalize_subject(topic: str) -> str:
    """``abstract_algebra`` / ``Abstract Algebra`` -> ``abstract algebra`` (the key of ``SUBJECT_CATEGORY``)."""
    return " ".join(topic.replace("_", " ").lower().split())
