"""Paged KV-cache bookkeeping, as in vLLM: fixed-size blocks handed out on demand.

A contiguous cache reserves ``max_len`` positions per sequence up front, so a server
holds few sequences and most of the memory sits empty. Paging gives each sequence a
*block table* (a list of block ids) that grows one block at a time, wasting at most
``block_size - 1`` slots per sequence, and lets sequences with a common prompt share its
full blocks. This module does the bookkeeping only: which block holds which tokens, no
tensors. ``simulate_paged`` plays a stream of requests through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from learn.lab.events import Emit, no_emit


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
    ``bytes_per_slot``: K and V of one token in all layers
    (``KVCache.bytes_for(..., positions=1, ...)`` in ``learn.lab.kvcache``).
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
