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


@register.filter
def visible(token: str) -> str:
    """Whitespace made visible in a token: · for a space, ↵ for a new line, → for a tab."""
    return str(token).replace(" ", "·").replace("\n", "↵").replace("\t", "→")


@register.filter
def modulo(value: int, by: int) -> int:
    return int(value) % int(by)


@register.filter
def getlist(query: object, key: str) -> list[str]:
    return query.getlist(key) if hasattr(query, "getlist") else []


@register.filter
def intcomma_plain(value: int) -> str:
    return f"{int(value):,}"


@register.filter
def share_query(params: dict) -> str:
    """A tokenize run's params as the query string that pre-fills the form."""
    from urllib.parse import urlencode

    pairs = [("text", params.get("text", ""))]
    for name in params.get("tokenizers", []):
        pairs.append(("tokenizers", name) if name in {"smollm2", "minilm"} else ("trained", name))
    return urlencode(pairs)


@register.simple_tag
def kv_group(head: int, group: int) -> int:
    """The key/value head a query head reads under grouped-query attention."""
    return int(head) // int(group)


@register.filter
def index(values: list, i: int) -> object:
    return values[int(i)]


@register.simple_tag
def move_on(board: str, cell: int, player: str) -> str:
    """The board with ``player``'s mark in ``cell`` (noughts and crosses, 9 characters)."""
    return board[:cell] + player + board[cell + 1 :]


@register.filter
def lookup(mapping: dict, key: object) -> object:
    return mapping.get(key)
