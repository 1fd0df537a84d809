"""Filters and tags for the site's templates.

``lab_source`` shows lesson code cut from the tested lab files, so a page can never show
code that no test runs.
"""

from __future__ import annotations

import ast
import json
import textwrap
from functools import lru_cache
from pathlib import Path

from django import template
from django.utils.html import format_html

register = template.Library()

ROOT = Path(__file__).resolve().parents[2]  # the project root, where learn/ lives
LAB = "learn.lab"


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


# --------------------------------------------------------------------- lesson code


@register.simple_tag
def lab_source(*refs: str) -> str:
    """``{% lab_source "learn.lab.bpe_train:naive_train" %}``: that function's (or class's,
    or ``Class.method``'s) source, as an escaped ``<pre><code>`` block headed by its file.
    Several references make one block, in the order given.

    The file is parsed, never imported (the web process must not load torch). A module
    or name that is not there raises ``TemplateSyntaxError`` when the page renders, so a
    renamed function fails the page's test instead of leaving a hole in the lesson.
    """
    if not refs:
        raise template.TemplateSyntaxError("lab_source needs a 'learn.lab.<module>:<name>'")
    parts, shown = [], None
    for ref in refs:
        where, code = lab_source_text(ref)
        if where != shown:  # a heading comment each time the file (or class) changes
            parts.append(f"# {where}\n")
            shown = where
        parts.append(f"{code}\n\n\n")
    return format_html(
        '<pre class="lab-source" data-lab-source="{}"><code>{}</code></pre>',
        " ".join(refs),
        "".join(parts).rstrip("\n"),
    )


def lab_source_text(ref: str) -> tuple[str, str]:
    """(where: the file from the project root, and the class for a method; the dedented
    source) of ``module:name`` or ``module:Class.method``."""
    module, _, qualname = ref.partition(":")
    names = [*module.split("."), *qualname.split(".")]
    if not all(n.isidentifier() for n in names) or not (module + ".").startswith(LAB + "."):
        raise template.TemplateSyntaxError(
            f"lab_source {ref!r}: expected 'learn.lab.<module>:<name>'"
        )
    path = _module_file(module)
    if path is None:
        raise template.TemplateSyntaxError(f"lab_source {ref!r}: no module {module}")
    lines, tree = _parsed(path, path.stat().st_mtime_ns)
    node: ast.AST = tree
    for name in qualname.split("."):
        node = _child(node, name, ref)
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    # whole lines, not ast.get_source_segment: that stops before a last line's comment
    code = textwrap.dedent("\n".join(lines[first - 1 : node.end_lineno]))
    where = path.relative_to(ROOT).as_posix()
    owner = qualname.rpartition(".")[0]
    return (f"{where}, class {owner}" if owner else where), code


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=64)
def _parsed(path: Path, mtime_ns: int) -> tuple[list[str], ast.Module]:
    """A file's lines and syntax tree; an edited file has a new mtime, so it is re-read."""
    source = path.read_text(encoding="utf-8")
    return source.splitlines(), ast.parse(source, filename=str(path))


def _child(node: ast.AST, name: str, ref: str) -> ast.AST:
    """The def or class ``name`` directly inside a module or class body."""
    for child in getattr(node, "body", []):
        defines = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        if isinstance(child, defines) and child.name == name:
            return child
    raise template.TemplateSyntaxError(f"lab_source {ref!r}: no def or class {name!r} there")


# --------------------------------------------------------------------- a learner's runs

URL_VALUE_LIMIT = 1_500  # characters of one value a "run again" link still carries


@register.filter
def short_params(params: dict) -> str:
    """A run's parameters in one short line: 'k=3, n=2, texts: 5 items'."""
    parts = []
    for key, value in (params or {}).items():
        if isinstance(value, list):
            shown = ", ".join(map(str, value)) if len(str(value)) <= 30 else f"{len(value)} items"
            parts.append(f"{key}: {shown}")
        elif isinstance(value, str) and len(value) > 24:
            parts.append(f"{key}: {len(value):,} chars")
        elif isinstance(value, dict):
            parts.append(f"{key}: …")
        else:
            parts.append(f"{key}={value}")
    line = ", ".join(parts)
    return line if len(line) <= 120 else line[:119] + "…"


def form_pairs(params: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """A run's parameters as form values ([(name, value)], a list as repeated names) and
    the names that cannot travel in a URL (large texts kept beside the run, long values)."""
    pairs: list[tuple[str, str]] = []
    left_out: list[str] = []
    for key, value in (params or {}).items():
        if key.endswith("_chars"):  # LargeTextParams: the text itself is kept elsewhere
            left_out.append(key.removesuffix("_chars"))
            continue
        if isinstance(value, dict):  # a JSON field (structured output's schema): its text
            value = json.dumps(value, indent=2)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, dict | list) for v in values) or value is None:
            continue
        texts = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
        if sum(map(len, texts)) > URL_VALUE_LIMIT:
            left_out.append(key)
            continue
        pairs.extend((key, text) for text in texts)
    return pairs, left_out


@register.simple_tag
def rerun_link(run: object, playground: object) -> dict[str, object] | None:
    """``{% rerun_link run playground as rerun %}``: ``rerun.url`` opens the chapter at the
    playground with its form pre-filled (static/js/app.js reads the query string);
    ``rerun.left_out`` names what the URL cannot carry. None for a playground with no form."""
    from urllib.parse import urlencode

    from django.urls import reverse

    if playground is None or getattr(playground, "hidden", False):
        return None
    params = getattr(run, "params", {}) or {}
    if playground.slug == "tokenize":  # type: ignore[attr-defined]
        query, left_out = share_query(params), []
    else:
        pairs, left_out = form_pairs(params)
        query = urlencode(pairs)
    url = reverse("chapter", args=[playground.chapter])  # type: ignore[attr-defined]
    if getattr(playground, "uploads", False):
        left_out.append("uploaded file")
    return {"url": f"{url}?{query}#pg-{playground.slug}", "left_out": left_out}  # type: ignore[attr-defined]


@register.filter
def latest_of(latest_runs: object, slug: str) -> object:
    """``latest_runs|latest_of:pg.slug``: the learner's newest run of a playground, if any
    (``latest_runs`` comes from learn.pages.chapter_context; absent, nothing)."""
    return latest_runs.get(slug) if isinstance(latest_runs, dict) else None
