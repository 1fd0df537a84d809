"""SmolLM2's tokenizer rebuilt from the GGUF with no torch equals transformers' conversion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from learn.lab.smollm2_text import chat_text, load_tokenizer, tokenizer_json

TEXTS = [
    "Hello, wörld! 你好，世界 🤖🚀 naïve café",
    "  leading spaces\tand\ttabs\n\n\nand blank lines  ",
    "def f(x):\n    return x ** 2  # squares\n",
    "The year 2024 had 366 days; 1,000,000 is a million. e=mc^2",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "",
]


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoTokenizer

    from learn.lab.models import smollm2_gguf

    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).backend_tokenizer


@pytest.fixture(scope="module")
def ours():
    """Built from the GGUF now, not read from a file an earlier run may have cached."""
    from tokenizers import Tokenizer

    from learn.lab.models import smollm2_gguf

    return Tokenizer.from_str(json.dumps(tokenizer_json(smollm2_gguf())))


@pytest.mark.parametrize("text", [*TEXTS, Path(__file__).read_text()])
def test_ids_equal_transformers_gguf_conversion(reference, ours, text: str) -> None:
    for specials in (False, True):
        assert ours.encode(text, add_special_tokens=specials).ids == (
            reference.encode(text, add_special_tokens=specials).ids
        )
    assert ours.decode(ours.encode(text).ids) == reference.decode(reference.encode(text).ids)


def test_the_chat_markers_are_single_special_tokens() -> None:
    ids = load_tokenizer().encode(chat_text([{"role": "user", "content": "hi"}])).ids
    assert ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|> × 3, <|im_end|> × 2


def test_counting_tokens_imports_no_torch() -> None:
    code = (
        "import sys; from learn.lab.smollm2_text import count_tokens; "
        "assert count_tokens('hello world') == 2; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
