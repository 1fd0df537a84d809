"""Exact search by brute force: compare the query with every vector, keep the k best.

This is the ground truth every approximate index is scored against. It is one matrix
product per block of queries, so it runs in torch and uses the GPU with ``device="cuda"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from learn.lab.events import Emit, no_emit
from learn.lab.vindex.base import (
    METRICS,
    SCAN_ELEMENTS,
    Hits,
    as_matrix,
    check_k,
    check_metric,
    normalize,
    require_built,
)


class FlatIndex:
    """Exact k-NN. ``metric``: ``"l2"`` (squared), ``"cosine"`` (1 - cos) or ``"ip"`` (-dot)."""

    name = "flat"

    def __init__(self, metric: str = "l2", *, device: str = "cpu") -> None:
        self.metric = check_metric(metric, METRICS)
        self.device = torch.device(device)
        self.x: torch.Tensor | None = None  # (n, d) on device
        self.x_norms: torch.Tensor | None = None  # (n,) squared norms, for l2
        self.n = 0
        self.d = 0

    def build(self, x: np.ndarray, *, emit: Emit = no_emit) -> None:
        x = as_matrix(x)
        if self.metric == "cosine":
            x = normalize(x)
        self.n, self.d = x.shape
        self.x = torch.from_numpy(x).to(self.device)
        self.x_norms = (self.x * self.x).sum(dim=1)
        emit("progress", pct=100.0, message=f"flat: stored {self.n} vectors")

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int, **params: Any) -> Hits:
        """Exact ``k`` nearest rows for each query (q, d). No search parameters."""
        require_built(self, self.x is not None)
        assert self.x is not None and self.x_norms is not None
        if params:
            raise TypeError(f"flat search takes no parameters, got {sorted(params)}")
        k = check_k(k)
        qs = as_matrix(queries, self.d, "queries")
        if self.metric == "cosine":
            qs = normalize(qs)
        kk = min(k, self.n)
        block = max(1, SCAN_ELEMENTS // max(self.n, 1))  # queries per (block, n) matrix
        out_d = np.full((len(qs), k), np.inf, dtype=np.float32)
        out_i = np.full((len(qs), k), -1, dtype=np.int64)
        for s in range(0, len(qs), block):
            q = torch.from_numpy(qs[s : s + block]).to(self.device)  # (b, d)
            dots = q @ self.x.T  # (b, n)
            if self.metric == "l2":
                dist = (q * q).sum(1, keepdim=True) - 2 * dots + self.x_norms  # (b, n)
                dist.clamp_(min=0)
            elif self.metric == "cosine":
                dist = 1 - dots
            else:  # ip: larger dot is closer, so negate it
                dist = -dots
            vals, idx = torch.topk(dist, kk, dim=1, largest=False, sorted=True)  # (b, kk)
            out_d[s : s + block, :kk] = vals.cpu().numpy()
            out_i[s : s + block, :kk] = idx.cpu().numpy()
        return Hits(out_d, out_i)

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
