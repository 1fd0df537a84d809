"""A trained ``BPETokenizer`` as a Hugging Face ``tokenizer.json`` document.

The export is checked by loading it with ``tokenizers`` and comparing its ids with ours on
held-out text. The pre-tokenizer is HF's ``ByteLevel`` (which splits with GPT-2's pattern
itself) or, for the other patterns, a regex ``Split`` followed by ``ByteLevel`` without
its own split; the decoder is ``ByteLevel``, turning byte characters back into bytes.
``bpe_document`` writes the document; SmolLM2's tokenizer (``learn.lab.smollm2_text``,
rebuilt from its GGUF file) is written by it too.
"""

from __future__ import annotations

import json
from typing import Any

from learn.lab.bpe import PATTERNS, BPETokenizer

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}


def bpe_document(
    vocab: dict[str, int],
    merges: list[list[str]],
    special: dict[str, int],
    pre_tokenizer: dict[str, Any],
) -> dict[str, Any]:
    """A byte-level BPE as a Hugging Face ``tokenizer.json`` document.

    ``vocab``: token (in byte-level characters) -> id; ``merges``: [left, right] pairs in
    merge order; ``special``: special token -> id (matched whole, never split);
    ``pre_tokenizer``: how text is split before BPE. The decoder is ``ByteLevel``, turning
    byte characters back into bytes.
    """
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token, i in special.items()
        ],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {**BYTE_LEVEL, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def to_hf_dict(tokenizer: BPETokenizer) -> dict[str, Any]:
    """``tokenizer`` as a Hugging Face ``tokenizer.json`` document (BPE model)."""
    kind = tokenizer.config.pretokenizer
    byte_level = {**BYTE_LEVEL, "use_regex": kind == "gpt2"}  # GPT-2's split, built in
    pre_tokenizer: dict[str, Any] = byte_level
    if kind != "gpt2":
        split = {
            "type": "Split",
            "pattern": {"Regex": PATTERNS[kind]},
            "behavior": "Isolated",
            "invert": False,
        }
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    return bpe_document(
        tokenizer.ids,
        [[tokenizer.vocab[a], tokenizer.vocab[b]] for a, b in tokenizer.merges],
        {s: tokenizer.ids[s] for s in tokenizer.config.special_tokens},
        pre_tokenizer,
    )


def to_hf_json(tokenizer: BPETokenizer) -> str:
    """``tokenizer.json`` text: load it with ``tokenizers.Tokenizer.from_str``."""
    return json.dumps(to_hf_dict(tokenizer), ensure_ascii=False)
