"""Grammar-constrained decoding: a JSON schema becomes a token mask at every step.

The engine is llguidance (the structured-output engine vLLM, SGLang and llama.cpp can use):
it compiles the schema to a grammar, and, given the tokenizer's whole vocabulary, tracks
the parser state token by token. Each step it answers "which of the 49,152 tokens keep the
text a valid prefix of some document the grammar accepts?" as a bitmask (one bit per
token); the decode loop sets every other logit to -inf before sampling, then tells the
engine which token was drawn.

    c = json_constraint(schema, tokenizer)
    while not c.done:
        logits = model(...)[0, -1]          # (vocab,)
        token = sample(c.mask(logits))      # disallowed tokens are at -inf
        c.advance(token)

Building the engine's view of the tokenizer (a trie over the vocabulary) costs a few
hundred milliseconds, so it is made once per tokenizer and kept (``engine_tokenizer``);
compiling one schema takes about a millisecond.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import llguidance
    from tokenizers import Tokenizer

END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "</s>")  # first one in the vocabulary ends
# Whitespace between JSON tokens: bounded, so a small model cannot pad forever with
# newlines (a known failure mode of constrained decoding with free whitespace).
WHITESPACE = r"[\x20\x0A]{0,12}"

_engines: dict[int, tuple[Any, Any]] = {}  # id(tokenizer) -> (tokenizer, LLTokenizer)
_engines_lock = threading.Lock()


def end_of_turn_id(tokenizer: Tokenizer) -> int | None:
    """The id of the tokenizer's end-of-turn token (the chat models' stop), if it has one."""
    for name in END_OF_TURN:
        token = tokenizer.token_to_id(name)
        if token is not None:
            return int(token)
    return None


def engine_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of an HF ``tokenizers.Tokenizer``, built once per tokenizer object."""
    import llguidance

    with _engines_lock:
        hit = _engines.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        eos = end_of_turn_id(tokenizer)
        lltok = llguidance.LLTokenizer(tokenizer.to_str(), eos_token=eos)
        _engines[id(tokenizer)] = (tokenizer, lltok)  # the strong ref keeps the id unique
        return lltok


class Constraint:
    """One generation's grammar state: ``mask`` the logits, ``advance`` by the drawn token.

    ``done`` turns true when the grammar accepts the text and allows nothing more (or the
    end-of-turn token was taken). ``mask_ms`` sums the wall time spent computing and
    applying masks; ``steps`` counts them.
    """

    def __init__(self, matcher: llguidance.LLMatcher, lltok: llguidance.LLTokenizer) -> None:
        self.matcher = matcher
        self.vocab = int(lltok.vocab_size)
        self.eos = int(lltok.eos_token)
        self._words = torch.zeros((self.vocab + 31) // 32, dtype=torch.int32)  # (W,) bitmask
        self.mask_ms = 0.0
        self.steps = 0

    @property
    def done(self) -> bool:
        return bool(self.matcher.is_stopped())

    @property
    def accepting(self) -> bool:
        """The text so far is a complete document of the grammar."""
        return bool(self.matcher.is_accepting())

    def allowed(self) -> Tensor:
        """The tokens allowed next, (vocab,) bool on the CPU."""
        if self.matcher.is_error():
            raise RuntimeError(f"constraint in error state: {self.matcher.get_error()}")
        words = self._words
        self.matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * 4)
        # token i is bit i % 32 of little-endian word i // 32: unpack the bytes LSB first
        bits = np.unpackbits(words.numpy().view(np.uint8), bitorder="little")  # (32 W,)
        return torch.from_numpy(bits[: self.vocab].astype(np.bool_))

    def mask(self, logits: Tensor) -> Tensor:
        """logits (vocab',) -> a copy with every token the grammar forbids at -inf.

        Tokens past the tokenizer's vocabulary (padding rows of the output layer) are
        forbidden too.
        """
        t0 = time.perf_counter()
        ok = self.allowed()  # (vocab,)
        if logits.shape[-1] > self.vocab:
            pad = torch.zeros(logits.shape[-1] - self.vocab, dtype=torch.bool)
            ok = torch.cat([ok, pad])
        out = logits.masked_fill(~ok[: logits.shape[-1]].to(logits.device), float("-inf"))
        self.mask_ms += (time.perf_counter() - t0) * 1e3
        self.steps += 1
        return out

    def advance(self, token: int) -> None:
        """Move the parser past ``token``. Raises ValueError for a token the mask forbade."""
        if not self.matcher.consume_token(int(token)):
            raise ValueError(f"token {token} rejected: {self.matcher.get_error()}")


def compile_schema(schema: dict[str, Any], lltok: llguidance.LLTokenizer) -> Any:
    """A fresh llguidance matcher for ``schema``; ValueError with the engine's reason."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), overrides={"whitespace_pattern": WHITESPACE}
        )
    except ValueError as exc:
        raise ValueError(f"The schema is not a JSON object the engine can read: {exc}") from exc
    matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
    if matcher.is_error():
        reason = " ".join(matcher.get_error().split())[:300]  # one line, bounded
        raise ValueError(f"The structured-output engine cannot use this schema: {reason}")
    return matcher


def json_constraint(schema: dict[str, Any], tokenizer: Tokenizer) -> Constraint:
    """A ``Constraint`` that lets only JSON valid against ``schema`` through.

    ``tokenizer`` is the model's ``tokenizers.Tokenizer``; its end-of-turn token is
    allowed once the document is complete. Raises ValueError (a readable sentence) for a
    schema the engine rejects.
    """
    lltok = engine_tokenizer(tokenizer)
    return Constraint(compile_schema(schema, lltok), lltok)


def engine_version() -> str:
    """llguidance's version, for results that say what masked the logits."""
    import llguidance

    return str(llguidance.__version__)
