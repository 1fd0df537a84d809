"""The two rules of the layout: the lab knows nothing of Django or Celery, and the web
process never loads torch or transformers."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_LAB = ("django", "celery", "ninja", "kombu", "workers", "webapp", "learn.models")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "learn" / "lab").rglob("*.py")), ids=lambda p: p.name
)
def test_lab_modules_import_neither_django_nor_celery(path: Path) -> None:
    bad = {
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_LAB)
        or (name.startswith("learn.") and not name.startswith("learn.lab"))
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


WEB_PROCESS = """
import sys
import django
django.setup()
from django.test import Client
import webapp.asgi, webapp.urls, learn.admin
client = Client(HTTP_HOST="127.0.0.1")
for url in ["/", "/chapters/embeddings/", "/chapters/transformers/", "/api/playgrounds",
            "/api/openapi.json", "/healthz"]:
    assert client.get(url).status_code == 200, url
response = client.post("/api/playgrounds/embed/runs", {"texts": ["one", "two"]},
                       content_type="application/json")
assert response.status_code == 202, response.content
response = client.post("/api/playgrounds/analogy/runs", {"a": "king", "b": "man", "c": "woman"},
                       content_type="application/json")
assert response.status_code == 202, response.content
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def test_the_web_process_never_imports_torch(services: dict[str, str], worker) -> None:
    """(With a live worker: /healthz answers 503 when none is alive.)"""
    env = {**os.environ, **services}
    done = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HEAVY: \n" in done.stdout, done.stdout


def test_the_import_contracts_hold() -> None:
    """pyproject's [tool.importlinter] contracts: layers, a pure lab, no torch on the web
    side, handlers writing only through learn.services, learn never importing workers."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_every_registered_handler_exists_and_the_web_side_never_imports_it() -> None:
    """One registry: each entry's dotted handler path resolves to a function in the
    chapter module that mirrors its schema's module."""
    import importlib

    import django

    django.setup()
    from learn.playgrounds import PLAYGROUNDS

    for slug, pg in PLAYGROUNDS.items():
        module, _, name = pg.handler.partition(":")
        chapter = pg.params.__module__.rsplit(".", 1)[-1]
        assert module == f"workers.handlers.{chapter}", (slug, module)
        assert callable(getattr(importlib.import_module(module), name)), slug


def test_there_are_no_import_cycles_among_our_modules() -> None:
    """Not even ones hidden by imports inside functions (grimp sees those too)."""
    import grimp

    graph = grimp.build_graph("learn", "workers", "webapp")
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module) & graph.modules:
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            component = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    assert not cycles
