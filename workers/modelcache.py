"""Models loaded once per worker process and kept for the next job."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learn.lab.embeddings import Encoder
    from learn.lab.tokenize import NamedTokenizer


@cache
def device() -> str:
    from learn.lab.embeddings import pick_device

    return pick_device()


@cache
def versions() -> dict[str, str]:
    from learn.lab.models import library_versions

    return library_versions()


@cache
def encoder() -> Encoder:
    from learn.lab.embeddings import Encoder

    return Encoder(device=device())


@cache
def reference_tokenizer(name: str) -> NamedTokenizer:
    """SmolLM2's byte-level BPE or MiniLM's WordPiece, loaded once per process."""
    from learn.lab import models
    from learn.lab.tokenize import hf_tokenizer

    if name == "smollm2":
        from learn.lab.llama_gguf import smollm2_tokenizer_file

        return hf_tokenizer(smollm2_tokenizer_file(), "SmolLM2", "byte-level BPE")
    if name == "minilm":
        return hf_tokenizer(models.minilm_tokenizer_file(), "MiniLM", "WordPiece")
    raise KeyError(name)


@cache
def smollm2() -> tuple[Any, Any]:
    """(model, tokenizer): SmolLM2-135M-Instruct on this worker's device, loaded once."""
    from learn.lab.llama_gguf import load_smollm2

    return load_smollm2(device())
