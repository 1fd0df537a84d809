"""IVF-Flat's search in torch, for the GPU: the same answer as ``ivfscan.scan_flat``.

The compiled CPU scan walks one query at a time through its probed cells. A GPU wants
large, regular work instead, so this turns the loop inside out (as GPU IVF libraries
do, FAISS's among them): every (query, probed cell) pair is grouped by cell, and each
cell is scanned once, as one matrix product of *all* the queries that probe it against
the cell's vectors, plus one top-k. Each pair's k best then meet in a final top-k per
query. One host sync per search (the pair count of each cell), then one small batch of
launches per non-empty cell.

Shapes: queries (q, d), centroids (nlist, d), list vectors (n, d) stored cell by cell,
cell ``c`` owning list positions ``offsets[c]:offsets[c + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# (query, vector) distances held at once for one cell; larger groups go in row blocks
CELL_ELEMENTS = 1 << 26


@dataclass
class DeviceLists:
    """An IVF-Flat index's lists copied to a torch device once, reused by every search."""

    centroids: Tensor  # (nlist, d) float32
    centroid_norms: Tensor  # (nlist,)
    vectors: Tensor  # (n, d) float32, in list order
    norms: Tensor  # (n,) |x|² of each list vector
    offsets: np.ndarray  # (nlist + 1,) int64, on the host: the loop reads them

    @classmethod
    def of(
        cls, centroids: np.ndarray, vectors: np.ndarray, offsets: np.ndarray, device: torch.device
    ) -> DeviceLists:
        c = torch.from_numpy(centroids).to(device)
        x = torch.from_numpy(vectors).to(device)
        return cls(c, (c * c).sum(1), x, (x * x).sum(1), offsets)


@torch.inference_mode()
def search_flat(
    lists: DeviceLists, qs: np.ndarray, nprobe: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probe the ``nprobe`` nearest cells of each query (q, d) and keep the ``k`` best:
    ``(squared L2 (q, k), list positions (q, k))``, nearest first, +inf / -1 padded."""
    device = lists.vectors.device
    nq, nlist = len(qs), len(lists.centroids)
    nprobe = min(nprobe, nlist)
    out_d = np.full((nq, k), np.inf, dtype=np.float32)
    out_p = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0:
        return out_d, out_p
    q = torch.from_numpy(qs).to(device)  # (q, d)
    q_norms = (q * q).sum(1)  # (q,)
    # the coarse quantizer: |c|² - 2 q·c ranks the cells (|q|² is the same for all)
    coarse = torch.addmm(lists.centroid_norms, q, lists.centroids.T, alpha=-2)  # (q, nlist)
    cells = torch.topk(coarse, nprobe, dim=1, largest=False).indices  # (q, nprobe)

    # group the (query, probe) pairs by cell: pair p = query p // nprobe, its cell cells[p]
    pair_cell = cells.flatten()  # (q * nprobe,)
    order = torch.argsort(pair_cell, stable=True)  # pairs, cell by cell
    counts = torch.bincount(pair_cell, minlength=nlist).cpu().numpy()  # the one sync
    pair_query = order // nprobe  # (q * nprobe,) the query of each pair, in that order
    cand_d = torch.full((nq * nprobe, k), float("inf"), device=device)  # per pair: k best
    cand_p = torch.full((nq * nprobe, k), -1, dtype=torch.int64, device=device)

    start = 0
    for c in np.flatnonzero(counts):
        m = int(counts[c])
        lo, hi = int(lists.offsets[c]), int(lists.offsets[c + 1])
        if hi > lo:
            x, x_norms = lists.vectors[lo:hi], lists.norms[lo:hi]  # (size, d), (size,)
            kk = min(k, hi - lo)
            rows = max(1, CELL_ELEMENTS // (hi - lo))
            for r in range(start, start + m, rows):
                pairs = order[r : min(r + rows, start + m)]  # (b,) pair ids
                who = pair_query[r : min(r + rows, start + m)]  # (b,) their queries
                score = torch.addmm(x_norms, q[who], x.T, alpha=-2)  # (b, size)
                vals, idx = torch.topk(score, kk, dim=1, largest=False)  # (b, kk)
                cand_d[pairs, :kk] = vals + q_norms[who, None]
                cand_p[pairs, :kk] = idx + lo
        start += m

    # each query's k best over its nprobe pairs
    per_query_d = cand_d.view(nq, nprobe * k)
    best, pick = torch.topk(per_query_d, k, dim=1, largest=False)  # (q, k)
    pos = torch.gather(cand_p.view(nq, nprobe * k), 1, pick)
    pos = torch.where(torch.isinf(best), torch.full_like(pos, -1), pos)
    out_d[:] = best.clamp(min=0).cpu().numpy()
    out_p[:] = pos.cpu().numpy()
    return out_d, out_p
