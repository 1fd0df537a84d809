"""A trained ``BPETokenizer`` as a Hugging Face ``tokenizer.json`` document.

The export is checked by loading it with ``tokenizers`` and comparing its ids with ours on
held-out text. The pre-tokenizer is HF's ``ByteLevel`` (which splits with GPT-2's pattern
itself) or, for the other patterns, a regex ``Split`` followed by ``ByteLevel`` without
its own split; the decoder is ``ByteLevel``, turning byte characters back into bytes.
"""

from __future__ import annotations

import json
from typing import Any

from learn.lab.bpe import PATTERNS, BPETokenizer


def to_hf_dict(tokenizer: BPETokenizer) -> dict[str, Any]:
    """``tokenizer`` as a Hugging Face ``tokenizer.json`` document (BPE model)."""
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": tokenizer.config.pretokenizer == "gpt2",
    }
    if tokenizer.config.pretokenizer == "gpt2":
        pre_tokenizer: dict[str, Any] = byte_level
    else:
        split = {
            "type": "Split",
            "pattern": {"Regex": PATTERNS[tokenizer.config.pretokenizer]},
            "behavior": "Isolated",
            "invert": False,
        }
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": tokenizer.ids[s],
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s in tokenizer.config.special_tokens
        ],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {**byte_level, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": tokenizer.ids,
            "merges": [[tokenizer.vocab[a], tokenizer.vocab[b]] for a, b in tokenizer.merges],
        },
    }


def to_hf_json(tokenizer: BPETokenizer) -> str:
    """``tokenizer.json`` text: load it with ``tokenizers.Tokenizer.from_str``."""
    return json.dumps(to_hf_dict(tokenizer), ensure_ascii=False)
