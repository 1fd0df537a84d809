"""The decode loop: continue a prompt one token at a time, with or without the KV cache.

Works on any model with the interface of ``learn.lab.llama.Llama``:
``model(ids (B, T), cache, start_pos, last_only=...) -> logits (B, T, vocab)``, plus
``model.config`` (n_layers, n_kv_heads, head_dim, max_seq_len, eos_id), ``model.device``
and ``model.dtype``.

- ``generate``: greedy or temperature / top-k / top-p sampling (``learn.lab.sampling``),
  emitting each token as it is made; ``greedy_no_cache`` recomputes the whole sequence
  every step; ``kv_cache_comparison`` runs both on one prompt.
- ``TextStream``, ``stop_set`` and ``sync`` serve the speculative decoders as well.

On the CPU a float32 ``Llama`` decodes through ``learn.lab.packed.packed_model``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from learn.lab.events import Emit, no_emit
from learn.lab.kvcache import KVCache
from learn.lab.packed import packed_model
from learn.lab.sampling import sample

if TYPE_CHECKING:
    from learn.lab.constrained import Constraint


class Tokenizer(Protocol):  # what we need of tokenizers.Tokenizer
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class TextStream:
    """Decode ids incrementally; hold back text while a multi-byte character is incomplete.

    Each push decodes only a short window (the previous piece and what is new), so the
    host work per token stays constant as the output grows.
    """

    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer, self.ids = tokenizer, []
        self._start = self._read = 0  # the window: ids[_start:_read] was sent last time

    def push(self, token: int) -> str:
        """Add a token; return the new text it completes ("" without a tokenizer)."""
        self.ids.append(token)
        if self.tokenizer is None:
            return ""
        sent = self.tokenizer.decode(self.ids[self._start : self._read])
        text = self.tokenizer.decode(self.ids[self._start :])
        if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the next token
            return ""
        self._start, self._read = self._read, len(self.ids)
        return text[len(sent) :]

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids) if self.tokenizer is not None else ""


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stop_set(model: Any, stop_ids: Sequence[int] | None) -> frozenset[int]:
    """The tokens that end a generation: ``stop_ids``, or the model's end-of-turn token."""
    return frozenset([model.config.eos_id] if stop_ids is None else stop_ids)


@dataclass
class Generation:
    tokens: list[int]  # the new tokens only
    text: str
    token_ms: list[float]  # wall time to produce each token; the first includes the prefill
    ttft_ms: float  # time to first token
    total_ms: float
    tokens_per_s: float  # len(tokens) / total time
    decode_tokens_per_s: float  # tokens after the first / their time
    prompt_tokens: int
    use_cache: bool
    cache_bytes: int  # memory of the KV cache (0 without one)
    stop_reason: str  # "stop_token" | "length" | "grammar" (a constraint allowed no more)
    device: str


def _finish(
    tokens: list[int],
    stream: TextStream,
    token_ms: list[float],
    prompt_len: int,
    use_cache: bool,
    cache_bytes: int,
    stop_reason: str,
    device: torch.device,
) -> Generation:
    total = sum(token_ms)
    rest = sum(token_ms[1:])
    return Generation(
        tokens=tokens,
        text=stream.text,
        token_ms=token_ms,
        ttft_ms=token_ms[0] if token_ms else 0.0,
        total_ms=total,
        tokens_per_s=len(tokens) / (total / 1e3) if total else 0.0,
        decode_tokens_per_s=(len(tokens) - 1) / (rest / 1e3) if rest else 0.0,
        prompt_tokens=prompt_len,
        use_cache=use_cache,
        cache_bytes=cache_bytes,
        stop_reason=stop_reason,
        device=str(device),
    )


@torch.inference_mode()
def generate(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    *,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
    constraint: Constraint | None = None,
    packed: bool = True,
) -> Generation:
    """Continue the prompt ``ids`` by up to ``max_new_tokens`` tokens, one at a time.

    With the cache: one forward over the prompt (prefill), then one token per step.
    Without: every step runs the whole sequence again (what the cache saves).
    Stops after a token in ``stop_ids`` (default: the model's end-of-turn token; ``()``
    never stops early). Emits ``partial`` with ``token``, ``text`` (the new piece, decoded
    when a tokenizer is given) and ``ms`` for every token.

    With a ``constraint`` (``learn.lab.constrained``), each step's logits go through
    ``constraint.mask`` before sampling and the token through ``constraint.advance``
    after; generation also stops once ``constraint.done`` (stop reason "grammar"). The
    per-token ms include the masking.

    A float32 model on the CPU runs on its packed twin (``learn.lab.packed``: the same
    weights, pre-arranged for the matmul); ``packed=False`` runs the model's own layers.
    """
    if packed:
        model = packed_model(model)
    device = model.device
    stops = stop_set(model, stop_ids)
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(seed)
    prompt = torch.tensor([list(ids)], dtype=torch.long, device=device)  # (1, T)
    total = prompt.shape[1] + max_new_tokens
    cache = KVCache.for_model(model, total) if use_cache else None
    seq = torch.empty((1, total), dtype=torch.long, device=device)  # prompt then new tokens
    seq[:, : prompt.shape[1]] = prompt
    pos = prompt.shape[1]
    tokens: list[int] = []
    token_ms: list[float] = []
    stream = TextStream(tokenizer)
    stop_reason = "length"
    x = prompt
    while len(tokens) < max_new_tokens:
        t0 = time.perf_counter()
        if cache is not None:
            logits = model(x, cache, pos - x.shape[1], last_only=True)  # (1, 1, vocab)
        else:
            logits = model(seq[:, :pos], None, 0, last_only=True)
        last = logits[0, -1]  # (vocab,)
        if constraint is not None:
            last = constraint.mask(last)
        token = sample(last, temperature, top_k, top_p, gen)  # .item() syncs
        if constraint is not None:
            constraint.advance(token)
        sync(device)
        ms = (time.perf_counter() - t0) * 1e3
        tokens.append(token)
        token_ms.append(ms)
        seq[0, pos] = token
        x = seq[:, pos : pos + 1]  # (1, 1): the next step feeds only the new token
        pos += 1
        emit("partial", token=token, text=stream.push(token), ms=round(ms, 3))
        if token in stops:
            stop_reason = "stop_token"
            break
        if constraint is not None and constraint.done:
            stop_reason = "grammar"
            break
    nbytes = cache.nbytes if cache is not None else 0
    return _finish(
        tokens, stream, token_ms, prompt.shape[1], use_cache, nbytes, stop_reason, device
    )


def greedy_no_cache(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    *,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
) -> Generation:
    """Greedy decoding that recomputes the full sequence every step (no KV cache)."""
    return generate(
        model,
        ids,
        max_new_tokens,
        use_cache=False,
        stop_ids=stop_ids,
        tokenizer=tokenizer,
        emit=emit,
    )


def kv_cache_comparison(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    *,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
) -> dict[str, Any]:
    """Greedy with and without the KV cache on the same prompt: per-token ms side by side.

    Emits ``partial`` with ``mode`` ("cache" / "no_cache"), ``step``, ``token``, ``text``
    and ``ms``. The no-cache run goes first, with stop tokens off, then the cached run is
    given exactly as many tokens.
    """

    def relay(mode: str) -> Emit:
        step = iter(range(max_new_tokens))

        def fn(kind: str, /, **data: Any) -> None:
            emit(kind, mode=mode, step=next(step), **data)

        return fn

    slow = greedy_no_cache(
        model, ids, max_new_tokens, stop_ids=(), tokenizer=tokenizer, emit=relay("no_cache")
    )
    fast = generate(
        model, ids, len(slow.tokens), stop_ids=(), tokenizer=tokenizer, emit=relay("cache")
    )
    cfg = model.config
    per_pos = KVCache.bytes_for(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, 1, model.dtype.itemsize)
    return {
        "cache": fast,
        "no_cache": slow,
        "same_tokens": fast.tokens == slow.tokens,
        "speedup": slow.total_ms / fast.total_ms if fast.total_ms else 0.0,
        "cache_bytes_per_position": per_pos,
        "device": str(model.device),
    }
