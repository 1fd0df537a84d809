"""The one task's contract with handlers, without a worker: which device a result keeps,
and what a handler receives."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tasks():
    import django

    django.setup()
    from workers import tasks

    return tasks


def test_the_device_a_handler_reports_wins_over_the_workers(tasks) -> None:
    assert tasks.with_device({"device": "cpu", "x": 1}, "cuda") == {"device": "cpu", "x": 1}
    assert tasks.with_device({"device": "postgres"}, "cpu")["device"] == "postgres"


def test_a_result_without_a_device_gets_the_workers(tasks) -> None:
    assert tasks.with_device({"x": 1}, "cuda") == {"x": 1, "device": "cuda"}


def test_a_handler_takes_its_schema_instance_and_a_job(tasks) -> None:
    from learn.playgrounds.rag import MCTSParams
    from workers.handlers import Job

    params = MCTSParams.model_validate({"board": "XX.OO....", "simulations": 200})
    result = tasks.handler_for("mcts")(params, Job("run", lambda *_, **__: None, "cuda"))
    assert result["move"] == 2  # X completes the top row
    assert tasks.with_device(result, "cuda")["device"] == "cpu"  # tree search: CPU work


def test_every_lazy_import_inside_a_handler_resolves(tasks) -> None:
    """Handlers import the lab inside their functions (only workers load torch); a renamed
    lab function would otherwise surface as a failed run, not a failed test."""
    import ast
    import importlib
    from pathlib import Path

    missing = []
    for path in sorted((Path(tasks.__file__).parent / "handlers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                module = importlib.import_module(node.module)
                missing += [
                    f"{path.name}: {node.module}.{alias.name}"
                    for alias in node.names
                    if not hasattr(module, alias.name)
                    and importlib.util.find_spec(f"{node.module}.{alias.name}") is None
                ]
    assert not missing
