"""Lesson code is cut from the lab's tested files by ``{% lab_source %}``: every reference in
the templates resolves, the tag shows exactly the source Python sees, and it never imports
what it shows (the web process must not load torch)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.template import Context, Engine, TemplateSyntaxError
from django.utils.html import escape

from learn.templatetags.learn_tags import lab_source_text

ROOT = Path(__file__).resolve().parent.parent
ENGINE = Engine(libraries={"learn_tags": "learn.templatetags.learn_tags"})
TAG = re.compile(r"{%\s*lab_source\s+(.*?)\s*%}")


def render(tag_args: str) -> str:
    template = ENGINE.from_string("{% load learn_tags %}{% lab_source " + tag_args + " %}")
    return template.render(Context())


def tags_in_templates() -> list[tuple[str, str]]:
    """(template, the tag's arguments) for every ``lab_source`` in the templates."""
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        for args in TAG.findall(path.read_text(encoding="utf-8")):
            found.append((path.relative_to(ROOT / "templates").as_posix(), args))
    return found


TAGS = tags_in_templates()
REFS = sorted({ref for _, args in TAGS for ref in re.findall(r'"([^"]+)"', args)})


def test_the_lessons_show_lab_code():
    assert "learn.lab.bpe_train:_naive_steps" in REFS  # the scan finds what is there
    assert len(REFS) >= 20


@pytest.mark.parametrize("ref", REFS)
def test_every_reference_in_a_template_resolves(ref: str):
    where, code = lab_source_text(ref)
    assert (ROOT / where.partition(",")[0]).is_file()
    name = ref.rpartition(":")[2].rpartition(".")[2]
    assert re.match(rf"(@.*\n)*(async )?(def|class) {name}\b", code), code[:200]


@pytest.mark.parametrize(("template", "args"), TAGS, ids=[f"{t}:{a[:60]}" for t, a in TAGS])
def test_every_tag_in_a_template_renders(template: str, args: str):
    html = render(args)
    assert html.startswith('<pre class="lab-source"') and html.endswith("</code></pre>")
    assert html.count("<pre") == 1  # several references make one block


def test_it_shows_a_function_exactly_as_python_sees_it_escaped():
    from learn.lab import timing

    html = render('"learn.lab.timing:best_of"')
    expected = inspect.getsource(timing.best_of).rstrip("\n")
    assert "-&gt; tuple[float, T]:" in html and "->" not in html  # escaped
    assert html == (
        '<pre class="lab-source" data-lab-source="learn.lab.timing:best_of"><code>'
        f"# learn/lab/timing.py\n{escape(expected)}</code></pre>"
    )


def test_a_method_comes_dedented_with_its_decorator_and_its_class_named():
    from learn.lab.facts import SmolLM2Shape

    where, code = lab_source_text("learn.lab.facts:SmolLM2Shape.head_dim")
    assert where == "learn/lab/facts.py, class SmolLM2Shape"
    assert code == textwrap.dedent(inspect.getsource(SmolLM2Shape.head_dim.fget)).rstrip("\n")
    assert code.startswith("@property\ndef head_dim")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('"learn.lab.timing:no_such_function"', "no def or class 'no_such_function'"),
        ('"learn.lab.facts:SmolLM2Shape.no_such_method"', "no def or class 'no_such_method'"),
        ('"learn.lab.no_such_module:best_of"', "no module learn.lab.no_such_module"),
        ('"learn.lab.timing"', "expected 'learn.lab.<module>:<name>'"),
        ('"webapp.settings:DEBUG"', "expected 'learn.lab.<module>:<name>'"),
        ('"learn.lab../../etc:passwd"', "expected 'learn.lab.<module>:<name>'"),
        ('"learn.lab.timing:T"', "no def or class 'T'"),  # a name, but not a def or class
    ],
)
def test_a_missing_module_or_name_fails_the_render(args: str, message: str):
    with pytest.raises(TemplateSyntaxError, match=re.escape(message)):
        render(args)


def test_it_never_imports_what_it_shows():
    script = textwrap.dedent(
        """
        import sys
        from django.template import Context, Engine
        engine = Engine(libraries={"learn_tags": "learn.templatetags.learn_tags"})
        html = engine.from_string(
            '{% load learn_tags %}{% lab_source "learn.lab.quantize:Int8Linear" %}'
        ).render(Context())
        assert "class Int8Linear(nn.Module):" in html, html[:300]
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("learn.lab"))
        print("LOADED:" + ",".join(loaded))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "LOADED:"
