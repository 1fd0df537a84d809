"""Continuous batching on a paged KV cache: a real batched decode of our Llama.

``learn.lab.paged`` does the bookkeeping of a paged cache (which block holds which
tokens); this module gives it tensors and a model, the way vLLM serves requests:

- **The pool**: per layer, K and V of ``num_blocks`` blocks of ``block_size`` positions,
  (L, num_blocks, block_size, nkv, hs) each. A request's *block table* lists the blocks
  holding its positions in order: position p lives in block ``table[p // block_size]``
  at offset ``p % block_size``. Nothing is reserved for tokens not yet generated.
- **Continuous batching**: a scheduler loop in which requests *join* between decode
  steps (one prefill over the prompt with our ordinary contiguous cache, whose K and V
  are then copied into fresh blocks) and *leave* (at a stop token or their token limit,
  their blocks going straight back to the pool for the next request). Every decode step
  is ONE forward pass for all active requests, ids (B, 1), each at its own position.
- **Attention over block tables**: each layer writes the new token's K and V into its
  request's current block, gathers the request's blocks back into a (B, nkv, S, hs) view
  (S = the longest table x block_size) and masks positions past each request's length.
  Plain torch: the same code on CPU and CUDA (a fused paged-attention kernel reads the
  blocks in place instead of gathering them; the maths is this).
- **Out of blocks**: a request waits in the queue until its prompt fits; a running
  request that needs a block when none is free preempts the most recently admitted
  request, which frees its blocks and later re-joins with its prompt and the tokens it
  had made (recompute preemption, as vLLM does by default).

Greedy outputs equal ``learn.lab.decoding.generate`` run on each request alone; sampled
ones too, for the same seed, since each request draws from its own generator.

Shapes: B active requests, nb blocks in the longest table, bs block size, S = nb x bs,
nh query heads, nkv key/value heads (GQA), hs head size, C model width, L layers.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from learn.lab.decoding import stop_set, sync
from learn.lab.events import Emit, no_emit
from learn.lab.kvcache import KVCache
from learn.lab.packed import packed_model
from learn.lab.paged import OutOfBlocks, PagedKVAllocator
from learn.lab.sampling import sample


class PagedKVPool:
    """The physical cache: K and V blocks for every layer, (L, num_blocks, bs, nkv, hs) each."""

    def __init__(
        self,
        n_layers: int,
        num_blocks: int,
        block_size: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        shape = (n_layers, num_blocks, block_size, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.num_blocks = num_blocks

    @classmethod
    def for_model(cls, model: Any, num_blocks: int, block_size: int) -> PagedKVPool:
        cfg = model.config
        return cls(
            cfg.n_layers,
            num_blocks,
            block_size,
            cfg.n_kv_heads,
            cfg.head_dim,
            dtype=model.dtype,
            device=model.device,
        )

    @property
    def bytes_per_slot(self) -> int:
        """K and V of one position in all layers."""
        L, _, _, nkv, hs = self.k.shape
        return 2 * L * nkv * hs * self.k.element_size()

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def write_prefill(self, table: Sequence[int], cache: KVCache, n: int) -> None:
        """Copy positions 0..n-1 of a batch-1 contiguous ``cache`` into ``table``'s blocks."""
        pos = torch.arange(n, device=self.k.device)
        blocks = torch.tensor(table, device=self.k.device)[pos // self.block_size]  # (n,)
        offsets = pos % self.block_size
        # cache (L, 1, nkv, P, hs) -> (L, n, nkv, hs): one copy for all layers
        self.k[:, blocks, offsets] = cache.k[:, 0, :, :n].transpose(1, 2)
        self.v[:, blocks, offsets] = cache.v[:, 0, :, :n].transpose(1, 2)

    def gather(self, layer: int, tables: Tensor) -> tuple[Tensor, Tensor]:
        """tables (B, nb) of block ids -> K, V of ``layer`` as (B, nkv, nb x bs, hs) each."""
        B, nb = tables.shape
        _, _, bs, nkv, hs = self.k.shape
        k = self.k[layer][tables].view(B, nb * bs, nkv, hs).transpose(1, 2)
        v = self.v[layer][tables].view(B, nb * bs, nkv, hs).transpose(1, 2)
        return k, v


@torch.inference_mode()
def decode_step(
    model: Any, pool: PagedKVPool, tokens: Tensor, positions: Tensor, tables: Tensor
) -> Tensor:
    """One batched decode step over the paged cache.

    tokens (B,) at positions (B,) (each request's own), tables (B, nb) block ids (rows
    padded with any valid block; the mask hides them) -> logits (B, vocab), float32.
    Writes each token's K and V into block ``tables[b, pos // bs]`` at ``pos % bs``.
    """
    B = tokens.shape[0]
    bs = pool.block_size
    S = tables.shape[1] * bs
    x = model.embed_tokens(tokens[:, None])  # (B, 1, C)
    cos = model.rope_cos[positions][:, None, None, :]  # (B, 1, 1, hs): each its own position
    sin = model.rope_sin[positions][:, None, None, :]
    blocks = tables.gather(1, (positions // bs)[:, None])[:, 0]  # (B,) where this token goes
    offsets = positions % bs
    keys = torch.arange(S, device=tokens.device)
    mask = (keys[None, :] <= positions[:, None])[:, None, None, :]  # (B, 1, 1, S)
    for i, block in enumerate(model.layers):
        att = block.attention
        q, k, v = att.project(block.attention_norm(x), cos, sin)  # (B, nh or nkv, 1, hs)
        pool.k[i, blocks, offsets] = k[:, :, 0]  # (B, nkv, hs) into B slots
        pool.v[i, blocks, offsets] = v[:, :, 0]
        ks, vs = pool.gather(i, tables)  # (B, nkv, S, hs)
        y = F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask, enable_gqa=True)
        x = x + att.wo(y.transpose(1, 2).reshape(B, 1, att.nh * att.hs))
        x = x + block.feed_forward(block.ffn_norm(x))
    return model.output(model.norm(x))[:, 0].float()  # (B, vocab)


@dataclass
class PagedRequest:
    """One request: a prompt, a token limit, when it arrives and how it samples."""

    ids: list[int]
    max_new_tokens: int
    arrival_step: int = 0
    temperature: float = 0.0  # <= 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None


@dataclass
class RequestResult:
    tokens: list[int]  # the new tokens only
    stop_reason: str  # "stop_token" | "length"
    joined_step: int  # first admitted
    finished_step: int
    preemptions: int
    blocks: list[int]  # every block it held, in the order it took them


@dataclass
class StepRecord:
    step: int
    batch: int  # requests in this step's decode forward
    joined: list[int]
    left: list[int]
    preempted: list[int]
    waiting: int
    # the pool during this step's forward (after joins, before leaves):
    blocks_used: int
    kv_bytes: int  # blocks in use x block_size x bytes per slot
    contiguous_bytes: int  # a contiguous cache per running request (see ``serve``), bytes
    tokens_held: int  # positions written, over running requests (this step's included)
    ms: float
    owners: list[int] | None = None  # block -> request index (-1 free), when recorded


@dataclass
class PagedRun:
    results: list[RequestResult]
    steps: list[StepRecord]
    new_tokens: int
    seconds: float  # wall time of the whole loop, prefills included
    tokens_per_s: float
    decode_tokens_per_s: float  # tokens made by batched decode steps / their time
    peak_kv_bytes: int
    peak_contiguous_bytes: int
    pool_bytes: int
    bytes_per_slot: int
    block_size: int
    num_blocks: int
    max_batch: int
    max_len: int
    device: str
    dtype: str
    # prefills, decode_steps, preemptions, blocks_in_use_at_end
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Live:
    """A request the scheduler is serving (or that waits to be re-admitted)."""

    index: int
    req: PagedRequest
    gen: torch.Generator
    tokens: list[int] = field(default_factory=list)
    cached: int = 0  # positions whose K/V are in the pool
    joined: int = -1
    preemptions: int = 0
    blocks: list[int] = field(default_factory=list)

    @property
    def sid(self) -> str:
        return str(self.index)

    @property
    def seq(self) -> list[int]:
        return self.req.ids + self.tokens


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


@torch.inference_mode()
def serve(
    model: Any,
    requests: Sequence[PagedRequest],
    *,
    num_blocks: int,
    block_size: int = 16,
    max_batch: int | None = None,
    max_len: int | None = None,
    contiguous_new_tokens: int | None = None,
    stop_ids: Sequence[int] | None = None,
    record_owners: bool = False,
    emit: Emit = no_emit,
) -> PagedRun:
    """Serve ``requests`` with continuous batching on a paged cache of ``num_blocks`` blocks.

    Each step: requests that have arrived join while there is a batch slot
    (``max_batch``, default all) and room for their prompt (first come, first served);
    each joiner is prefilled alone and makes its first token; then one batched decode
    step makes the next token of every running request; finished ones leave and free
    their blocks. For comparison, a contiguous cache reserves, for each running request,
    ``max_len`` positions (a server-wide limit), else its prompt + ``contiguous_new_tokens``
    (default its own token limit): what it must hold from the start, not knowing when the
    request will stop.
    Stops after a token in ``stop_ids`` (default the model's end-of-turn token; ``()``
    never stops early).
    Emits ``partial`` per step with its ``StepRecord`` fields (owners left out).
    ``record_owners`` keeps, per step, which request held each block.
    A float32 model on the CPU runs on its packed twin (``learn.lab.packed``), as
    ``generate`` does.
    """
    model = packed_model(model)
    cfg = model.config
    device = model.device
    stops = stop_set(model, stop_ids)
    if not requests:
        raise ValueError("no requests to serve")
    longest = max(len(r.ids) + r.max_new_tokens for r in requests)

    def reserve(live: _Live) -> int:
        """Positions a contiguous cache would hold for this request from its start."""
        return max_len or len(live.req.ids) + (contiguous_new_tokens or live.req.max_new_tokens)

    for i, r in enumerate(requests):
        if not r.ids or r.max_new_tokens < 1:
            raise ValueError(f"request {i} needs a prompt and max_new_tokens >= 1")
        need = blocks_for(len(r.ids) + r.max_new_tokens, block_size)
        if need > num_blocks:
            raise ValueError(
                f"request {i} may need {need} blocks of {block_size} but the pool has "
                f"{num_blocks}: give the pool more blocks"
            )
        if len(r.ids) + r.max_new_tokens > cfg.max_seq_len:
            raise ValueError(f"request {i} is longer than the model's {cfg.max_seq_len}")
    max_batch = max_batch or len(requests)
    pool = PagedKVPool.for_model(model, num_blocks, block_size)
    alloc = PagedKVAllocator(num_blocks, block_size, max_len or longest, pool.bytes_per_slot)
    slot = pool.bytes_per_slot

    def new_live(i: int, r: PagedRequest) -> _Live:
        gen = torch.Generator(device=device)  # as ``generate`` makes it, so draws match
        if r.seed is not None:
            gen.manual_seed(r.seed)
        return _Live(i, r, gen)

    pending = deque(
        sorted((new_live(i, r) for i, r in enumerate(requests)), key=lambda x: x.req.arrival_step)
    )
    waiting: deque[_Live] = deque()
    running: list[_Live] = []  # in admission order: the last is preempted first
    results: dict[int, RequestResult] = {}
    steps: list[StepRecord] = []
    counts = {"prefills": 0, "decode_steps": 0, "preemptions": 0}
    decode_tokens, decode_s = 0, 0.0
    step = 0
    sync(device)
    start = time.perf_counter()

    def pick(live: _Live, logits: Tensor) -> int:
        r = live.req
        return sample(logits, r.temperature, r.top_k, r.top_p, live.gen)

    def finish_if_done(live: _Live, left: list[int]) -> bool:
        reason = None
        if live.tokens[-1] in stops:
            reason = "stop_token"
        elif len(live.tokens) >= live.req.max_new_tokens:
            reason = "length"
        if reason is None:
            return False
        alloc.free(live.sid)
        results[live.index] = RequestResult(
            live.tokens, reason, live.joined, step, live.preemptions, live.blocks
        )
        left.append(live.index)
        return True

    while pending or waiting or running:
        t0 = time.perf_counter()
        if not running and not waiting and pending[0].req.arrival_step > step:
            step = pending[0].req.arrival_step  # nothing to do until the next arrival
        while pending and pending[0].req.arrival_step <= step:
            waiting.append(pending.popleft())
        joined: list[int] = []
        left: list[int] = []
        preempted: list[int] = []
        # 1. join: prefill arrivals while a batch slot and their blocks (+1 to grow) are free
        while waiting and len(running) < max_batch:
            live = waiting[0]
            seq = live.seq
            if blocks_for(len(seq) + 1, block_size) > len(alloc.free_blocks):
                break  # first come, first served: the head waits, and so do the rest
            waiting.popleft()
            alloc.allocate(live.sid, len(seq))
            cache = KVCache.for_model(model, len(seq))
            ids = torch.tensor([seq], dtype=torch.long, device=device)
            logits = model(ids, cache, 0, last_only=True)[0, -1]  # (vocab,)
            pool.write_prefill(alloc.tables[live.sid], cache, len(seq))
            live.cached = len(seq)
            live.blocks.extend(b for b in alloc.tables[live.sid] if b not in live.blocks)
            live.joined = step if live.joined < 0 else live.joined
            counts["prefills"] += 1
            joined.append(live.index)
            live.tokens.append(pick(live, logits))
            if not finish_if_done(live, left):
                running.append(live)
        # 2. every running request needs a slot for the token it feeds: preempt if none
        batch: list[_Live] = []
        for live in list(running):
            if live not in running:
                continue  # preempted by an earlier request this step
            while True:
                try:
                    alloc.append(live.sid)
                    break
                except OutOfBlocks:
                    victim = running[-1]
                    if victim is live and len(running) == 1:
                        raise OutOfBlocks(
                            f"request {live.index} alone fills all {num_blocks} blocks"
                        ) from None
                    running.remove(victim)
                    if victim in batch:
                        batch.remove(victim)
                    alloc.free(victim.sid)
                    victim.cached, victim.preemptions = 0, victim.preemptions + 1
                    waiting.appendleft(victim)  # first to re-join
                    preempted.append(victim.index)
                    counts["preemptions"] += 1
                    if victim is live:
                        break
            if live in running:
                table = alloc.tables[live.sid]
                if table[-1] not in live.blocks:
                    live.blocks.append(table[-1])
                batch.append(live)
        # what the pool holds while this step runs: every running request, its new slot too
        used = num_blocks - len(alloc.free_blocks)
        owners = None
        if record_owners:
            owners = [-1] * num_blocks
            for x in batch:
                for b in alloc.tables[x.sid]:
                    owners[b] = x.index
        held = sum(x.cached + 1 for x in batch)
        reserved = sum(reserve(x) for x in batch)
        # 3. one forward for the whole batch, each request at its own position
        if batch:
            t1 = time.perf_counter()
            nb = max(len(alloc.tables[x.sid]) for x in batch)
            tables = torch.tensor(
                [(alloc.tables[x.sid] + [0] * nb)[:nb] for x in batch], device=device
            )  # (B, nb), padded with block 0: masked out
            tokens = torch.tensor([x.tokens[-1] for x in batch], device=device)
            positions = torch.tensor([x.cached for x in batch], device=device)
            logits = decode_step(model, pool, tokens, positions, tables)  # (B, vocab)
            greedy = logits.argmax(-1).tolist()  # one host sync for the batch
            for row, live in enumerate(batch):
                live.cached += 1
                sampled = live.req.temperature > 0
                live.tokens.append(pick(live, logits[row]) if sampled else greedy[row])
                if finish_if_done(live, left):
                    running.remove(live)
            sync(device)
            decode_s += time.perf_counter() - t1
            decode_tokens += len(batch)
            counts["decode_steps"] += 1
        ms = (time.perf_counter() - t0) * 1e3
        record = StepRecord(
            step=step,
            batch=len(batch),
            joined=joined,
            left=left,
            preempted=preempted,
            waiting=len(waiting),
            blocks_used=used,
            kv_bytes=used * block_size * slot,
            contiguous_bytes=reserved * slot,
            tokens_held=held,
            ms=round(ms, 3),
        )
        emit("partial", **record.__dict__)  # owners not yet set: kept out of events
        record.owners = owners
        steps.append(record)
        step += 1
    sync(device)
    seconds = time.perf_counter() - start
    counts["blocks_in_use_at_end"] = num_blocks - len(alloc.free_blocks)
    total = sum(len(r.tokens) for r in results.values())
    return PagedRun(
        results=[results[i] for i in range(len(requests))],
        steps=steps,
        new_tokens=total,
        seconds=seconds,
        tokens_per_s=total / seconds if seconds else 0.0,
        decode_tokens_per_s=decode_tokens / decode_s if decode_s else 0.0,
        peak_kv_bytes=max(s.kv_bytes for s in steps),
        peak_contiguous_bytes=max(s.contiguous_bytes for s in steps),
        pool_bytes=pool.nbytes,
        bytes_per_slot=slot,
        block_size=block_size,
        num_blocks=num_blocks,
        max_batch=max_batch,
        max_len=max_len or longest,
        device=str(device),
        dtype=str(model.dtype).removeprefix("torch."),
        stats=counts,
    )


def concurrency_sweep(
    model: Any,
    prompts: Sequence[Sequence[int]],
    concurrency: Sequence[int],
    max_new_tokens: int,
    *,
    rounds: int = 1,
    vary_lengths: bool = False,
    block_size: int = 16,
    max_len: int | None = None,
    seed: int = 0,
    record_owners_for: int | None = None,
    emit: Emit = no_emit,
) -> list[dict[str, Any]]:
    """Throughput of the paged batched decode at each concurrency N.

    For each N: ``rounds`` x N requests (prompts taken in turn) all arrive at step 0 and
    are served N at a time, stop tokens off; with ``vary_lengths`` each request stops
    after a length drawn from [max_new_tokens / 2, max_new_tokens] (seeded), as if at its
    end-of-turn token, so requests leave at different steps and queued ones join
    mid-flight, while a contiguous cache still reserves prompt + ``max_new_tokens`` each
    (or ``max_len`` positions, if given). The pool holds N requests of the longest length.
    Returns one row per N: tokens/s, peak paged KV bytes and the contiguous caches' bytes;
    the run with N = ``record_owners_for`` also keeps its per-step records (with block
    owners). Emits ``progress`` between runs.
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k, n in enumerate(concurrency):
        emit("progress", pct=100 * k / len(concurrency), message=f"{n} concurrent requests")
        reqs = []
        for j in range(rounds * n):
            limit = max_new_tokens
            if vary_lengths:
                low = max(1, math.ceil(max_new_tokens / 2))
                limit = int(torch.randint(low, max_new_tokens + 1, (1,), generator=g))
            reqs.append(PagedRequest(list(prompts[j % len(prompts)]), limit))
        longest = max(len(r.ids) + r.max_new_tokens for r in reqs)
        run = serve(
            model,
            reqs,
            num_blocks=n * blocks_for(longest, block_size),
            block_size=block_size,
            max_batch=n,
            max_len=max_len,
            contiguous_new_tokens=max_new_tokens,
            stop_ids=(),
            record_owners=n == record_owners_for,
        )
        row: dict[str, Any] = {
            "concurrency": n,
            "requests": len(reqs),
            "new_tokens": run.new_tokens,
            "seconds": round(run.seconds, 4),
            "tokens_per_s": round(run.tokens_per_s, 2),
            "decode_tokens_per_s": round(run.decode_tokens_per_s, 2),
            "peak_kv_bytes": run.peak_kv_bytes,
            "peak_contiguous_bytes": run.peak_contiguous_bytes,
            "peak_tokens_bytes": max(s.tokens_held for s in run.steps) * run.bytes_per_slot,
            "max_len": run.max_len,
            "bytes_per_slot": run.bytes_per_slot,
            "steps": len(run.steps),
            "preemptions": run.stats["preemptions"],
            "device": run.device,
            "dtype": run.dtype,
        }
        if n == record_owners_for:
            row["timeline"] = [s.__dict__ for s in run.steps]
            row["num_blocks"] = run.num_blocks
            row["per_request"] = [
                {"joined": r.joined_step, "finished": r.finished_step, "tokens": len(r.tokens)}
                for r in run.results
            ]
        rows.append(row)
    emit("progress", pct=100, message="done")
    return rows
