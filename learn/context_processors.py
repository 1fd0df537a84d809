"""What every page's template may use."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from learn.lab import facts as lab_facts


def facts(request: HttpRequest) -> dict[str, Any]:
    """``facts``: model shapes, variant and index names, as the lab and the schemas see
    them (``learn.lab.facts``, no torch), so a form offers exactly what the worker does."""
    return {"facts": lab_facts}
