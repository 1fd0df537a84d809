"""Exact search by brute force: compare the query with every vector, keep the k best.

This is the ground truth every approximate index is scored against. It is one matrix
product per block of queries, so it runs in torch and uses the GPU with ``device="cuda"``.
"""

from __future__ import annotations

import numpy as np
import torch

from learn.lab.events import Emit
from learn.lab.vindex.base import METRICS, BaseIndex, Hits, check_metric, scan_blocks


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
