"""Sentence embeddings with MiniLM, and the small geometry shown next to them.

``Encoder`` reproduces sentence-transformers' all-MiniLM-L6-v2 pipeline with plain
transformers: WordPiece tokens (truncated to 256), BERT, mean pooling over real tokens,
L2 normalisation. Vectors are unit length, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from learn.lab.events import Emit, no_emit
from learn.lab.models import minilm_path


def pick_device(prefer: str | None = None) -> str:
    """``prefer`` if given ("cpu", "cuda", "cuda:1"), else "cuda" when available, else "cpu"."""
    if prefer:
        return prefer
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """Silence transformers' "Loading weights" bar (the lab never prints), then restore it."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class Encoder:
    """MiniLM sentence encoder loaded from a local directory only.

    ``dtype``: the weights' and activations' precision (default float32). float16 on a GPU
    halves the bytes read and runs on the tensor cores; pooling and normalising stay in
    float32, so the vectors match float32's to a cosine of ~0.9999 (``bench/gpu.py``).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        path = Path(path) if path is not None else minilm_path()
        self.device = pick_device(device)
        self.dtype = dtype or torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=True)
        with _no_progress_bar():
            model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model = model.to(self.device, self.dtype).eval()
        st_config = path / "sentence_bert_config.json"  # sentence-transformers' truncation
        max_len = 256
        if st_config.is_file():
            max_len = json.loads(st_config.read_text()).get("max_seq_length", max_len)
        self.max_length = min(int(max_len), self.model.config.max_position_embeddings)

    @property
    def dim(self) -> int:
        """Embedding width (384 for MiniLM-L6)."""
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str], *, batch_size: int = 64, emit: Emit = no_emit) -> np.ndarray:
        """Embed ``texts`` -> (n, dim) float32, rows L2-normalised, in input order.

        Everything is tokenized in one call, then batched longest first, so each batch
        pads only to its own longest text and similar lengths share a batch.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, d)
        if not texts:
            return out
        ids = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, return_attention_mask=False
        )["input_ids"]
        order = np.argsort([-len(t) for t in ids], kind="stable")  # longest first
        n_batches = (len(texts) + batch_size - 1) // batch_size
        pad_id = self.tokenizer.pad_token_id or 0
        for b in range(n_batches):
            rows = order[b * batch_size : (b + 1) * batch_size]
            lengths = [len(ids[i]) for i in rows]
            input_ids = np.full((len(rows), lengths[0]), pad_id, dtype=np.int64)  # (B, T)
            for r, i in enumerate(rows):
                input_ids[r, : lengths[r]] = ids[i]
            input_ids_t = torch.from_numpy(input_ids).to(self.device)
            mask = (torch.arange(lengths[0]) < torch.tensor(lengths)[:, None]).to(self.device)
            hidden = self.model(
                input_ids=input_ids_t,
                attention_mask=mask.long(),
                token_type_ids=torch.zeros_like(input_ids_t),
            ).last_hidden_state.float()  # (B, T, d), pooled in float32
            m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, d)
            out[rows] = F.normalize(pooled, p=2, dim=1).float().cpu().numpy()
            emit("progress", pct=100.0 * (b + 1) / n_batches, message=f"batch {b + 1}/{n_batches}")
        return out


class Projection(NamedTuple):
    points: np.ndarray  # (n, 2) coordinates on the first two principal axes
    explained: np.ndarray  # (2,) fraction of total variance along each axis, in [0, 1]


def pca_2d(x: np.ndarray) -> Projection:
    """Project (n, d) rows onto their top two principal components (SVD of centred data).

    With n = 1 (or identical rows) there is no variance: points are all 0 and explained
    is (0, 0). With n = 2 the second axis carries nothing: explained is (1, 0).
    Axis signs are fixed so the largest-magnitude loading of each axis is positive.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    points = np.zeros((n, 2))
    explained = np.zeros(2)
    centred = x - x.mean(axis=0)  # (n, d)
    total = float((centred**2).sum())
    if n < 2 or total <= 0.0:
        return Projection(points, explained)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)  # u (n, r), s (r,), vt (r, d)
    r = min(2, s.size)
    signs = np.sign(vt[np.arange(r), np.abs(vt[:r]).argmax(axis=1)])  # (r,)
    signs[signs == 0] = 1.0
    points[:, :r] = u[:, :r] * s[:r] * signs
    explained[:r] = np.clip(s[:r] ** 2 / total, 0.0, 1.0)
    return Projection(points, explained)


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, n) pairwise cosine similarities; zero rows give 0 similarity."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    unit = x / np.where(norms == 0, 1.0, norms)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def analogy_vector(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Unit vector along a - b + c ("king - man + woman"), each (d,); zero stays zero."""
    v = np.asarray(a, dtype=np.float32) - b + c  # (d,)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v
