"""Decoding: the KV cache, sampling, speculative decoding and a paged cache allocator.

Every decoder here works on any model with the interface of ``learn.lab.llama.Llama``:
``model(ids (B, T), cache, start_pos, last_only=...) -> logits (B, T, vocab)``, plus
``model.config`` (n_layers, n_kv_heads, head_dim, max_seq_len, eos_id), ``model.device``
and ``model.dtype``.

- ``KVCache``: keys and values of every layer, preallocated for ``max_pos`` positions, so
  a decode step computes one token's K and V and reads the rest.
- ``generate``: the decode loop (greedy or temperature / top-k / top-p sampling), emitting
  each token as it is made; ``greedy_no_cache`` recomputes the whole sequence every step.
- ``speculative_prompt_lookup`` and ``speculative_draft_model``: guess several tokens
  cheaply, check them all in one forward pass of the real model, keep the agreeing prefix.
  Greedy only, so the output is exactly plain greedy decoding's.
- ``PagedKVAllocator``: vLLM-style bookkeeping of fixed-size cache blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from learn.lab.events import Emit, no_emit


class Tokenizer(Protocol):  # what we need of tokenizers.Tokenizer
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


# ---------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Keys and values for ``n_layers`` layers, preallocated: (L, B, nkv, max_pos, hs) each.

    Size in bytes = 2 (K and V) x layers x batch x kv_heads x head_dim x positions x
    bytes per number. SmolLM2-135M in float32: 2 x 30 x 3 x 64 x 4 = 46,080 bytes per
    position, so its 8,192-position context needs 377 MB.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_pos: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        shape = (n_layers, batch, n_kv_heads, max_pos, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_pos = max_pos

    @classmethod
    def for_model(cls, model: Any, max_pos: int, batch: int = 1) -> KVCache:
        cfg = model.config
        return cls(
            cfg.n_layers,
            batch,
            cfg.n_kv_heads,
            min(max_pos, cfg.max_seq_len),
            cfg.head_dim,
            dtype=model.dtype,
            device=model.device,
        )

    @staticmethod
    def bytes_for(
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        positions: int,
        dtype_bytes: int,
        batch: int = 1,
    ) -> int:
        """2 x layers x batch x kv_heads x head_dim x positions x bytes."""
        return 2 * n_layers * batch * n_kv_heads * head_dim * positions * dtype_bytes

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def update(self, layer: int, start_pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, nkv, T, hs) at start_pos.., return all keys/values so far.

        Returns views (B, nkv, start_pos + T, hs) into the preallocated buffers: no copy.
        """
        B, _, T, _ = k.shape
        end = start_pos + T
        if end > self.max_pos:
            raise ValueError(f"cache holds {self.max_pos} positions, asked to write up to {end}")
        self.k[layer, :B, :, start_pos:end] = k
        self.v[layer, :B, :, start_pos:end] = v
        return self.k[layer, :B, :, :end], self.v[layer, :B, :, :end]


# ---------------------------------------------------------------------------------------
# Sampling and the decode loop


def sample(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Pick a token id from logits (vocab,). temperature <= 0 means greedy (argmax).

    Otherwise: divide by temperature, keep the ``top_k`` most likely, then the smallest set
    whose probability reaches ``top_p`` (nucleus), renormalise and draw.
    """
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        probs, order = logits.softmax(-1).sort(descending=True)
        outside = probs.cumsum(-1) - probs >= top_p  # mass before this token already >= p
        logits[order[outside]] = float("-inf")
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class _TextStream:
    """Decode ids incrementally; hold back text while a multi-byte character is incomplete."""

    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer, self.ids, self.sent = tokenizer, [], 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the next token
            return ""
        piece, self.sent = text[self.sent :], len(text)
        return piece

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids) if self.tokenizer is not None else ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    stop_reason: str  # "stop_token" | "length"
    device: str


def _finish(
    tokens: list[int],
    stream: _TextStream,
    token_ms: list[float],
    prompt_len: int,
    use_cache: bool,
    cache_bytes: int,
    stopped: bool,
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
        stop_reason="stop_token" if stopped else "length",
        device=str(device),
    )


def _stop_set(model: Any, stop_ids: Sequence[int] | None) -> frozenset[int]:
    return frozenset([model.config.eos_id] if stop_ids is None else stop_ids)


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
) -> Generation:
    """Continue the prompt ``ids`` by up to ``max_new_tokens`` tokens, one at a time.

    With the cache: one forward over the prompt (prefill), then one token per step.
    Without: every step runs the whole sequence again (what the cache saves).
    Stops after a token in ``stop_ids`` (default: the model's end-of-turn token; ``()``
    never stops early). Emits ``partial`` with ``token``, ``text`` (the new piece, decoded
    when a tokenizer is given) and ``ms`` for every token.
    """
    device = model.device
    stops = _stop_set(model, stop_ids)
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
    stream = _TextStream(tokenizer)
    stopped = False
    x = prompt
    while len(tokens) < max_new_tokens:
        t0 = time.perf_counter()
        if cache is not None:
            logits = model(x, cache, pos - x.shape[1], last_only=True)  # (1, 1, vocab)
        else:
            logits = model(seq[:, :pos], None, 0, last_only=True)
        token = sample(logits[0, -1], temperature, top_k, top_p, gen)  # .item() syncs
        _sync(device)
        ms = (time.perf_counter() - t0) * 1e3
        tokens.append(token)
        token_ms.append(ms)
        seq[0, pos] = token
        x = seq[:, pos : pos + 1]
        pos += 1
        emit("partial", token=token, text=stream.push(token), ms=round(ms, 3))
        if token in stops:
            stopped = True
            break
    nbytes = cache.nbytes if cache is not None else 0
    return _finish(tokens, stream, token_ms, prompt.shape[1], use_cache, nbytes, stopped, device)


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


# ---------------------------------------------------------------------------------------
# Speculative decoding (greedy): draft several tokens, verify them in one pass


@dataclass
class SpecStep:
    drafted: int  # tokens proposed this step
    accepted: int  # of those, how many matched the model's own greedy choice
    ms: float

    @property
    def rejected(self) -> int:
        return self.drafted - self.accepted


@dataclass
class Speculation:
    tokens: list[int]
    text: str
    steps: list[SpecStep]  # one per target pass; each added its accepted drafts + 1 token
    accepted: int  # drafted tokens kept, over all steps
    rejected: int  # drafted tokens thrown away
    target_passes: int  # forward passes of the real model (plain greedy needs len(tokens))
    total_ms: float
    tokens_per_s: float
    method: str
    device: str

    @property
    def acceptance_rate(self) -> float:
        drafted = self.accepted + self.rejected
        return self.accepted / drafted if drafted else 0.0


def lookup_draft(seq: Sequence[int], ngram: int, num_draft: int) -> list[int]:
    """Prompt lookup: find the last ``n`` tokens earlier in ``seq``, propose what followed.

    Tries n = ngram, ngram-1, ..., 1 and the most recent earlier match; returns at most
    ``num_draft`` tokens (empty if nothing matches). Works when the answer quotes the input.
    """
    L = len(seq)
    for n in range(min(ngram, L - 1), 0, -1):
        tail = list(seq[L - n :])
        for start in range(L - n - 1, -1, -1):  # most recent match first
            if list(seq[start : start + n]) == tail:
                return list(seq[start + n : start + n + num_draft])
    return []


class _Verifier:
    """A model plus its cache; ``predict`` scores a run of new tokens in one forward pass."""

    def __init__(self, model: Any, total: int) -> None:
        self.model = model
        self.cache = KVCache.for_model(model, total)
        self.valid = 0  # positions [0, valid) of the cache hold keys of accepted tokens

    def predict(self, seq: list[int], last_only: bool = False) -> list[int]:
        """Feed seq[valid:], return the greedy next token after each fed position."""
        x = torch.tensor([seq[self.valid :]], dtype=torch.long, device=self.model.device)
        logits = self.model(x, self.cache, self.valid, last_only=last_only)  # (1, T, vocab)
        self.valid = len(seq)
        return logits[0].argmax(-1).tolist()


def _speculate(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    propose: Callable[[list[int]], list[int]],
    method: str,
    stop_ids: Sequence[int] | None,
    tokenizer: Tokenizer | None,
    emit: Emit,
) -> Speculation:
    """The shared loop: propose a draft, verify it in one pass, keep the agreeing prefix."""
    stops = _stop_set(model, stop_ids)
    seq = list(ids)
    target = _Verifier(model, len(seq) + max_new_tokens + 1)
    stream = _TextStream(tokenizer)
    steps: list[SpecStep] = []
    tokens: list[int] = []
    t_start = time.perf_counter()

    def take(new: list[int], drafted: int, accepted: int, ms: float) -> bool:
        """Append new tokens up to a stop token or the limit; True when generation is done."""
        kept = []
        for tok in new:
            kept.append(tok)
            if tok in stops or len(tokens) + len(kept) >= max_new_tokens:
                break
        tokens.extend(kept)
        seq.extend(kept)
        text = "".join(stream.push(t) for t in kept)
        emit("partial", tokens=kept, text=text, drafted=drafted, accepted=accepted, ms=round(ms, 3))
        return kept[-1] in stops or len(tokens) >= max_new_tokens

    first = target.predict(seq, last_only=True)[-1]  # prefill: the prompt gives one token
    ms = (time.perf_counter() - t_start) * 1e3
    steps.append(SpecStep(0, 0, ms))  # step 0, the prefill: nothing drafted
    done = max_new_tokens <= 0 or take([first], 0, 0, ms)
    while not done:
        t0 = time.perf_counter()
        room = max_new_tokens - len(tokens) - 1  # drafts past the limit would be wasted work
        draft = propose(seq)[: max(room, 0)]
        # one pass over the newest token + the draft: position i predicts draft[i]
        preds = target.predict(seq + draft)
        a = 0
        while a < len(draft) and draft[a] == preds[a]:  # keep the agreeing prefix
            a += 1
        target.valid = len(seq) + a  # keys past the agreement belong to rejected guesses
        ms = (time.perf_counter() - t0) * 1e3
        steps.append(SpecStep(len(draft), a, ms))
        done = take([*draft[:a], preds[a]], len(draft), a, ms)  # + the model's own token
    _sync(model.device)
    total = (time.perf_counter() - t_start) * 1e3
    return Speculation(
        tokens=tokens,
        text=stream.text,
        steps=steps,
        accepted=sum(s.accepted for s in steps),
        rejected=sum(s.rejected for s in steps),
        target_passes=len(steps),
        total_ms=total,
        tokens_per_s=len(tokens) / (total / 1e3) if total else 0.0,
        method=method,
        device=str(model.device),
    )


@torch.inference_mode()
def speculative_prompt_lookup(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    ngram: int = 3,
    num_draft: int = 10,
    *,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
) -> Speculation:
    """Greedy decoding with drafts copied from earlier in the sequence (prompt lookup).

    The draft costs nothing; each step is one forward pass over 1 + len(draft) tokens,
    which on a memory-bound device costs about as much as one token. Output equals plain
    greedy's. Emits ``partial`` per step: ``tokens``, ``text``, ``drafted``, ``accepted``, ``ms``.
    """
    return _speculate(
        model,
        ids,
        max_new_tokens,
        lambda seq: lookup_draft(seq, ngram, num_draft),
        "prompt_lookup",
        stop_ids,
        tokenizer,
        emit,
    )


@torch.inference_mode()
def speculative_draft_model(
    target: Any,
    draft: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    num_draft: int = 4,
    *,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
) -> Speculation:
    """Greedy decoding where a smaller ``draft`` model (same tokenizer) proposes
    ``num_draft`` tokens, one at a time, and the ``target`` checks them in one pass.

    Output equals plain greedy decoding of the target. The draft keeps its own cache,
    rolled back to the accepted prefix after each check.
    """
    drafter = _Verifier(draft, len(ids) + max_new_tokens + num_draft + 1)

    def propose(seq: list[int]) -> list[int]:
        # seq[:-1] is verified; the draft's cache may also hold its own rejected guesses
        drafter.valid = min(drafter.valid, len(seq) - 1)
        if drafter.valid < len(seq) - 1:  # the prompt, or the last draft token once all passed
            drafter.predict(seq[:-1], last_only=True)
        ctx = list(seq)
        for _ in range(num_draft):  # one token per pass: the draft's cheapest shape
            ctx.append(drafter.predict(ctx, last_only=True)[-1])
        return ctx[len(seq) :]

    return _speculate(
        target, ids, max_new_tokens, propose, "draft_model", stop_ids, tokenizer, emit
    )


# ---------------------------------------------------------------------------------------
# Paged KV cache bookkeeping


class OutOfBlocks(RuntimeError):
    """The pool has no free block left."""


@dataclass
class PagedStats:
    block_size: int
    blocks_total: int
    blocks_used: int
    blocks_shared: int  # used by more than one sequence
    sequences: int
    logical_tokens: int  # sum of sequence lengths (a shared prefix counted per sequence)
    stored_slots: int  # token slots actually written (a shared block counted once)
    allocated_slots: int  # blocks_used x block_size
    waste_slots: int  # allocated but empty: only the tail of each sequence's last block
    contiguous_slots: int  # a max-length buffer per sequence: sequences x max_len
    contiguous_waste_slots: int  # contiguous_slots - logical_tokens
    bytes_per_slot: int
    allocated_bytes: int
    contiguous_bytes: int


@dataclass
class PagedKVAllocator:
    """Fixed-size cache blocks handed out to sequences on demand, as in vLLM.

    A sequence's cache is a list of block ids (its block table), so it needs no
    contiguous region and wastes at most ``block_size - 1`` slots. Sequences that start
    with the same prompt can point at the same full blocks (reference counted); a block
    returns to the free pool when its last user finishes.
    ``bytes_per_slot``: K and V of one token in all layers (``KVCache.bytes_for(..., 1, ...)``).
    """

    num_blocks: int
    block_size: int = 16
    max_len: int = 2048  # what a contiguous allocator reserves per sequence
    bytes_per_slot: int = 0
    free_blocks: list[int] = field(init=False)
    refcount: list[int] = field(init=False)
    fill: list[int] = field(init=False)  # tokens written into each block
    tables: dict[str, list[int]] = field(init=False, default_factory=dict)
    lengths: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.free_blocks = list(range(self.num_blocks - 1, -1, -1))  # a stack: pop() gives 0 first
        self.refcount = [0] * self.num_blocks
        self.fill = [0] * self.num_blocks

    def _take(self) -> int:
        if not self.free_blocks:
            raise OutOfBlocks(f"all {self.num_blocks} blocks are in use")
        b = self.free_blocks.pop()
        self.refcount[b], self.fill[b] = 1, 0
        return b

    def allocate(
        self,
        seq_id: str,
        num_tokens: int,
        *,
        share_prefix_with: str | None = None,
        prefix_tokens: int = 0,
    ) -> list[int]:
        """Start ``seq_id`` with ``num_tokens`` tokens; returns its block table.

        With ``share_prefix_with``, the first ``prefix_tokens`` tokens are the same as that
        sequence's, and its full blocks covering them are shared instead of copied (a
        partly filled block is never shared, so sequences never write into each other's).
        """
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id!r} already exists")
        table: list[int] = []
        if share_prefix_with is not None:
            parent = self.tables[share_prefix_with]
            prefix_tokens = min(prefix_tokens, num_tokens, self.lengths[share_prefix_with])
            for b in parent[: prefix_tokens // self.block_size]:
                self.refcount[b] += 1
                table.append(b)
        self.tables[seq_id] = table
        self.lengths[seq_id] = len(table) * self.block_size
        try:
            self.append(seq_id, num_tokens - self.lengths[seq_id])
        except OutOfBlocks:
            self.free(seq_id)
            raise
        return list(table)

    def append(self, seq_id: str, n: int = 1) -> None:
        """Add ``n`` tokens to ``seq_id``, taking a new block whenever the last one is full."""
        table = self.tables[seq_id]
        for _ in range(n):
            if self.lengths[seq_id] % self.block_size == 0:  # no room: start a block
                table.append(self._take())
            self.fill[table[-1]] += 1
            self.lengths[seq_id] += 1

    def free(self, seq_id: str) -> None:
        """The sequence is done: drop its references; blocks nobody uses go back to the pool."""
        for b in self.tables.pop(seq_id):
            self.refcount[b] -= 1
            if self.refcount[b] == 0:
                self.fill[b] = 0
                self.free_blocks.append(b)
        del self.lengths[seq_id]

    def stats(self) -> PagedStats:
        used = [b for b in range(self.num_blocks) if self.refcount[b] > 0]
        logical = sum(self.lengths.values())
        stored = sum(self.fill[b] for b in used)
        allocated = len(used) * self.block_size
        contiguous = len(self.tables) * self.max_len
        return PagedStats(
            block_size=self.block_size,
            blocks_total=self.num_blocks,
            blocks_used=len(used),
            blocks_shared=sum(1 for b in used if self.refcount[b] > 1),
            sequences=len(self.tables),
            logical_tokens=logical,
            stored_slots=stored,
            allocated_slots=allocated,
            waste_slots=allocated - stored,
            contiguous_slots=contiguous,
            contiguous_waste_slots=contiguous - logical,
            bytes_per_slot=self.bytes_per_slot,
            allocated_bytes=allocated * self.bytes_per_slot,
            contiguous_bytes=contiguous * self.bytes_per_slot,
        )


@dataclass
class Request:
    prompt_tokens: int
    output_tokens: int
    arrival_step: int = 0
    shares_prefix: bool = False  # its first ``shared_prefix`` tokens equal every other sharer's


def simulate_paged(
    requests: Sequence[Request],
    *,
    block_size: int = 16,
    num_blocks: int = 1024,
    max_len: int = 2048,
    shared_prefix: int = 0,
    bytes_per_slot: int = 0,
    peak: dict[str, Any] | None = None,
    emit: Emit = no_emit,
) -> list[PagedStats]:
    """Serve ``requests`` step by step: each active sequence adds one token per step.

    A request arrives at ``arrival_step`` with its prompt, grows by one token per step,
    and is freed after ``output_tokens`` steps. Sharers point at the first sharer's prompt
    blocks. Emits ``partial`` with the step and its stats; returns the stats of every step.
    If ``peak`` is a dict, it is filled with the busiest step's ``step``, block ``tables``,
    sequence ``lengths`` and per-block ``refcount``: a picture of the pool at its fullest.
    """
    alloc = PagedKVAllocator(num_blocks, block_size, max_len, bytes_per_slot)
    remaining: dict[str, int] = {}
    history: list[PagedStats] = []
    sharer: str | None = None
    last = max((r.arrival_step + r.output_tokens for r in requests), default=0)
    for step in range(last + 1):
        for i, r in enumerate(requests):
            if r.arrival_step == step:
                sid = f"r{i}"
                parent = sharer if r.shares_prefix and sharer in alloc.tables else None
                alloc.allocate(
                    sid, r.prompt_tokens, share_prefix_with=parent, prefix_tokens=shared_prefix
                )
                if r.shares_prefix and parent is None:
                    sharer = sid
                remaining[sid] = r.output_tokens
        for sid in list(remaining):
            if remaining[sid] == 0:
                alloc.free(sid)
                del remaining[sid]
            else:
                alloc.append(sid)
                remaining[sid] -= 1
        stats = alloc.stats()
        if peak is not None and stats.allocated_slots > peak.get("allocated_slots", -1):
            peak.update(
                step=step,
                allocated_slots=stats.allocated_slots,
                tables={sid: list(t) for sid, t in alloc.tables.items()},
                lengths=dict(alloc.lengths),
                refcount=list(alloc.refcount),
            )
        history.append(stats)
        emit("partial", step=step, **stats.__dict__)
    return history
