from django import template

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """0.4567 → '45.7%'."""
    if value is None:
        return "–"
    return f"{100 * float(value):.{digits}f}%"


@register.filter
def short_id(value: object) -> str:
    return str(value)[:8]


@register.filter
def script_id(run_id: object, prefix: str) -> str:
    """A page-unique id for a run's JSON data: ``run.id|script_id:"embed"`` → 'embed-<uuid>'."""
    return f"{prefix}-{run_id}"


@register.filter
def sum_list(values: list[float]) -> float:
    return float(sum(values))


@register.filter
def cosine_similarity(distance: float) -> float:
    """pgvector's cosine distance (<=>) back to cosine similarity."""
    return 1.0 - float(distance)
