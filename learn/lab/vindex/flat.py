"""Exact search by brute force: compare the query with every vector, keep the k best.

This is the ground truth every approximate index is scored against. It is one matrix
product per block of queries, so it runs in torch and uses the GPU with ``device="cuda"``.

Blocks are sized by the device. A CPU wants blocks that stay in its caches: a few queries
at a time against every row (``SCAN_ELEMENTS`` distances). A GPU wants the opposite: the
whole batch of queries against large blocks of rows, so that each launch is one big
matrix product and one top-k, and the number of launches stays small
(:func:`scan_elements` sizes them from the memory the card has free).
"""

from __future__ import annotations

import numpy as np
import torch

from learn.lab.events import Emit
from learn.lab.vindex.base import (
    METRICS,
    SCAN_ELEMENTS,
    BaseIndex,
    Hits,
    check_metric,
    no_hits,
    scan_blocks,
)

# On a GPU, at most this many (query, row) distances at once (4 GiB in fp32), and at most
# a sixteenth of the free memory: the block, top-k's workspace and the merge fit easily.
GPU_SCAN_ELEMENTS = 1 << 30
MIN_KEY_BLOCK = 1 << 16  # rows per block on a GPU, at least (fewer queries a block if need be)


def scan_elements(device: torch.device) -> int:
    """How many (query, row) distances one brute-force block may hold on ``device``."""
    if device.type != "cuda":
        return SCAN_ELEMENTS
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(SCAN_ELEMENTS, min(GPU_SCAN_ELEMENTS, free // 16)))


class FlatIndex(BaseIndex):
    """Exact k-NN. ``metric``: ``"l2"`` (squared), ``"cosine"`` (1 - cos) or ``"ip"`` (-dot)."""

    name = "flat"

    def __init__(self, metric: str = "l2", *, device: str = "cpu") -> None:
        self.metric = check_metric(metric, METRICS)
        self.device = torch.device(device)
        self.x: torch.Tensor | None = None  # (n, d) on device
        self.x_norms: torch.Tensor | None = None  # (n,) squared norms, for l2

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        self.x = torch.from_numpy(x).to(self.device)
        self.x_norms = (self.x * self.x).sum(dim=1)
        return f"stored {self.n} vectors"

    @torch.inference_mode()
    def _search(self, qs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k`` nearest rows for each query (q, d). No search parameters."""
        assert self.x is not None and self.x_norms is not None
        if self.device.type == "cuda":
            return self._search_batched(qs, k, scan_elements(self.device))
        x, x_norms = self.x, self.x_norms

        def search_block(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            q = torch.from_numpy(block).to(self.device)  # (b, d)
            dots = q @ x.T  # (b, n)
            if self.metric == "l2":
                dist = (q * q).sum(1, keepdim=True) - 2 * dots + x_norms  # (b, n)
                dist.clamp_(min=0)
            elif self.metric == "cosine":
                dist = 2 - 2 * dots  # |q - x|² of unit vectors: finish halves it to 1 - cos
            else:  # ip: larger dot is closer, so negate it
                dist = -dots
            vals, idx = torch.topk(dist, min(k, self.n), dim=1, largest=False)  # (b, ≤k)
            return vals.cpu().numpy(), idx.cpu().numpy()

        return scan_blocks(qs, k, self.n, search_block)

    @torch.inference_mode()
    def _search_batched(self, qs: np.ndarray, k: int, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """The GPU's layout: all queries (or as many as ``budget`` allows against
        ``MIN_KEY_BLOCK`` rows) against blocks of ``budget // queries`` rows; each block's
        k best are merged with the best so far. (q, k) distances and ids, as ``_search``.

        l2 ranks rows by ``|x|² - 2 q·x`` (one ``addmm``: the row norms ride in the matrix
        product) and adds ``|q|²`` to the k winners only; cosine and ip rank by the dot
        product itself. So a block costs one matrix product and one top-k, no other pass.
        """
        assert self.x is not None and self.x_norms is not None
        x, x_norms, n = self.x, self.x_norms, self.n
        kk = min(k, n)
        if len(qs) == 0:
            return no_hits(0, k)
        q_all = torch.from_numpy(qs).to(self.device)  # (q, d)
        q_block = min(len(qs), max(1, budget // min(n, MIN_KEY_BLOCK)))
        key_block = min(n, max(kk, budget // q_block))
        parts_d, parts_i = [], []
        for s in range(0, len(qs), q_block):
            q = q_all[s : s + q_block]  # (b, d)
            best_v = best_i = None  # (b, ≤kk) scores (smaller is closer) and rows
            for j in range(0, n, key_block):
                j1 = min(j + key_block, n)
                if self.metric == "l2":  # |x|² - 2 q·x, smaller is closer
                    score = torch.addmm(x_norms[j:j1], q, x[j:j1].T, alpha=-2)  # (b, kb)
                else:  # -q·x, smaller is closer
                    score = torch.mm(q, x[j:j1].T).neg_()  # (b, kb)
                vals, idx = torch.topk(score, min(kk, j1 - j), dim=1, largest=False)
                idx += j
                if best_v is not None:  # merge with the best so far
                    vals, pick = torch.topk(torch.cat([best_v, vals], 1), kk, 1, largest=False)
                    idx = torch.gather(torch.cat([best_i, idx], 1), 1, pick)
                best_v, best_i = vals, idx
            assert best_v is not None and best_i is not None
            if self.metric == "l2":
                dist = (best_v + (q * q).sum(1, keepdim=True)).clamp_(min=0)
            elif self.metric == "cosine":
                dist = 2 + 2 * best_v  # |q - x|² of unit vectors; finish halves it
            else:
                dist = best_v
            parts_d.append(dist.cpu().numpy())
            parts_i.append(best_i.cpu().numpy())
        out_d, out_i = no_hits(len(qs), k)
        out_d[:, :kk] = np.concatenate(parts_d)
        out_i[:, :kk] = np.concatenate(parts_i)
        return out_d, out_i

    @property
    def nbytes(self) -> int:
        return 4 * self.n * self.d

    @property
    def bytes_per_vector(self) -> float:
        return 4.0 * self.d


def exact_knn(
    x: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2", *, device: str = "cpu"
) -> Hits:
    """Ground truth in one call: build a :class:`FlatIndex` on ``x`` and search it."""
    index = FlatIndex(metric, device=device)
    index.build(x)
    return index.search(queries, k)


def threshold_search(
    data: np.ndarray, queries: np.ndarray, threshold: float, *, k: int = 10
) -> dict[str, float]:
    """The "everything closer than T" search: cosine distance < ``threshold``.

    Unlike top-k it can return nothing or thousands. Reports the mean and the range of
    result counts per query, the share of queries with no result, and recall@k: the share
    of each query's true k nearest (by cosine) that fall under the threshold.
    """
    unit = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)  # (n, d)
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)  # (q, d)
    distance = 1.0 - q @ unit.T  # (q, n) cosine distances
    hits = distance < threshold  # (q, n)
    counts = hits.sum(axis=1)  # (q,)
    k = min(k, data.shape[0])
    nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]  # (q, k) true top-k, any order
    recall = float(np.take_along_axis(hits, nearest, axis=1).mean())
    return {
        "threshold": float(threshold),
        "mean_results": round(float(counts.mean()), 2),
        "min_results": int(counts.min()),
        "max_results": int(counts.max()),
        "empty_share": round(float((counts == 0).mean()), 4),
        "recall_at_k": round(recall, 4),
    }
