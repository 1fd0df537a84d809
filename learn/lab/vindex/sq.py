"""Scalar quantization: store each float32 coordinate as one byte, 4× smaller.

Per dimension j, training records the range ``[lo_j, hi_j]`` and cuts it into 255 equal
steps of ``step_j = (hi_j - lo_j) / 255``. A value is stored as the nearest step::

    code = round((v - lo) / step)          # 0..255, one uint8
    v̂    = lo + code * step                # decoded value

so for any value inside the training range, ``|v - v̂| <= step / 2``.
Search compares the float query with the decoded vectors (asymmetric: the query is
never quantized).
"""

from __future__ import annotations

import numpy as np

from learn.lab.events import Emit
from learn.lab.vindex.base import (
    SCAN_ELEMENTS,
    BaseIndex,
    check_metric,
    no_hits,
    pairwise_sq_l2,
    prepare,
    top_k,
)

LEVELS = 255  # steps between lo and hi: codes 0..255 use all of a uint8


class ScalarQuantizer:
    """The trainer and codec: per-dimension min/max, float32 <-> uint8."""

    def __init__(self) -> None:
        self.lo: np.ndarray | None = None  # (d,) float32
        self.step: np.ndarray | None = None  # (d,) float32, (hi - lo) / 255

    def train(self, x: np.ndarray) -> ScalarQuantizer:
        x = prepare(x, "l2")
        lo, hi = x.min(axis=0), x.max(axis=0)  # (d,)
        self.lo = lo.astype(np.float32)
        # a constant dimension gets step 1 so it encodes to 0 and decodes exactly
        self.step = np.where(hi > lo, (hi - lo) / LEVELS, 1.0).astype(np.float32)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float32 -> (n, d) uint8. Values outside the trained range are clipped."""
        assert self.lo is not None and self.step is not None, "train first"
        codes = np.rint((prepare(x, "l2", len(self.lo)) - self.lo) / self.step)
        return np.clip(codes, 0, LEVELS).astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, d) uint8 -> (n, d) float32 reconstruction."""
        assert self.lo is not None and self.step is not None, "train first"
        return (self.lo + codes.astype(np.float32) * self.step).astype(np.float32)

    @property
    def nbytes(self) -> int:
        return 0 if self.lo is None else 8 * len(self.lo)  # lo and step, float32 each


class SQIndex(BaseIndex):
    """Flat search over 8-bit codes: ``d`` bytes per vector instead of ``4 d``."""

    name = "sq8"

    def __init__(self, metric: str = "l2") -> None:
        self.metric = check_metric(metric)
        self.quantizer = ScalarQuantizer()
        self.codes: np.ndarray | None = None  # (n, d) uint8

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        self.quantizer.train(x)
        self.codes = self.quantizer.encode(x)
        return f"encoded {len(x)} vectors to uint8"

    def _search(self, qs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scan of the decoded vectors, one block of rows at a time. No parameters."""
        assert self.codes is not None
        best_d, best_i = no_hits(len(qs), k)
        rows = max(1, SCAN_ELEMENTS // max(len(qs), 1))  # rows decoded at a time
        for s in range(0, len(self.codes), rows):
            block = self.quantizer.decode(self.codes[s : s + rows])  # (b, d)
            dist, cols = top_k(pairwise_sq_l2(qs, block), k)  # (q, k)
            # merge this block's best with the running best
            all_d = np.concatenate([best_d, dist], axis=1)
            all_i = np.concatenate([best_i, np.where(cols >= 0, cols + s, -1)], axis=1)
            best_d, pick = top_k(all_d, k)
            best_i = np.take_along_axis(all_i, np.maximum(pick, 0), axis=1)
            best_i[pick < 0] = -1
        return best_d, best_i

    @property
    def nbytes(self) -> int:
        return (0 if self.codes is None else self.codes.nbytes) + self.quantizer.nbytes

    @property
    def bytes_per_vector(self) -> float:
        return float(self.d)  # one byte per dimension; the 8 d bytes of ranges are shared
