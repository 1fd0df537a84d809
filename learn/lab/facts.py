"""Facts the forms and the lab share, defined once, in a module that imports no torch.

The web process validates a form against these (a layer number, a group size, an index
name) without loading a model; the lab builds its models and indexes from the same
values, so a form can never offer what the worker cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# ---------------------------------------------------------------- SmolLM2-135M-Instruct


@dataclass(frozen=True)
class SmolLM2Shape:
    """SmolLM2-135M's architecture, as its GGUF metadata gives it."""

    vocab_size: int = 49152
    dim: int = 576  # C, the model width
    n_layers: int = 30
    n_heads: int = 9  # nh query heads
    n_kv_heads: int = 3  # nkv key/value heads (grouped-query attention)
    hidden_dim: int = 1536  # SwiGLU inner width
    rope_theta: float = 100000.0
    max_seq_len: int = 8192

    @property
    def head_dim(self) -> int:  # hs
        return self.dim // self.n_heads


SMOLLM2 = SmolLM2Shape()
MINILM_LAYERS = 6  # all-MiniLM-L6-v2: six encoder layers, 384-d output
MINILM_DIM = 384

# ----------------------------------------------------------------------- quantization

QuantModel = Literal["smollm2", "minilm"]
VariantName = Literal[
    "fp32", "bf16", "fp16", "int8-dynamic", "int8-smooth", "int8-weight", "int4-weight"
]
VARIANT_LABELS: dict[str, str] = {
    "fp32": "fp32 (reference)",
    "bf16": "bf16 weights and activations",
    "fp16": "fp16 (CUDA only)",
    "int8-dynamic": "int8 dynamic, one scale per tensor (PyTorch, CPU)",
    "int8-smooth": "int8 dynamic + SmoothQuant (ours, CPU; folded into the weights for MiniLM)",
    "int8-weight": "int8 weight-only, per channel (ours)",
    "int4-weight": "int4 weight-only, group-wise (ours)",
}
CUDA_ONLY_VARIANTS = frozenset({"fp16"})
# the quantize form's ticks: both dynamic int8s, so the outlier problem and its fix show
DEFAULT_VARIANTS = ("fp32", "bf16", "int8-dynamic", "int8-smooth", "int8-weight", "int4-weight")
GROUP_SIZES = (32, 64, 128, 256)  # int4 group sizes: a group shares one scale and zero

# -------------------------------------------------------------------------- tokenizers

Pretokenizer = Literal["gpt2", "gpt4", "whitespace"]
PRETOKENIZER_NAMES: dict[str, str] = {
    "gpt2": "GPT-2 pattern",
    "gpt4": "GPT-4 pattern",
    "whitespace": "whitespace only",
}

# ----------------------------------------------------------------------- vector indexes

IndexName = Literal[
    "flat",
    "kdtree",
    "hnsw",
    "ivf_flat",
    "ivf_pq",
    "pq",
    "sq8",
    "faiss_flat",
    "faiss_hnsw",
    "faiss_ivf_flat",
    "faiss_ivf_pq",
    "faiss_sq8",
    "hnswlib",
]
INDEX_LABELS: dict[str, str] = {
    "flat": "exact (ours, torch)",
    "kdtree": "K-D tree (ours)",
    "hnsw": "HNSW (ours)",
    "ivf_flat": "IVF-Flat (ours)",
    "ivf_pq": "IVF-PQ (ours)",
    "pq": "PQ (ours)",
    "sq8": "SQ8 (ours)",
    "faiss_flat": "FAISS Flat",
    "faiss_hnsw": "FAISS HNSW",
    "faiss_ivf_flat": "FAISS IVF-Flat",
    "faiss_ivf_pq": "FAISS IVF-PQ",
    "faiss_sq8": "FAISS SQ8",
    "hnswlib": "hnswlib",
}
HNSW_KINDS = frozenset({"hnsw", "faiss_hnsw", "hnswlib"})  # take M and ef_construction
IVF_KINDS = frozenset({"ivf_flat", "ivf_pq", "faiss_ivf_flat", "faiss_ivf_pq"})  # take nlist
PQ_KINDS = frozenset({"ivf_pq", "pq", "faiss_ivf_pq"})  # take m and nbits
DEFAULT_INDEXES = ("flat", "hnsw", "hnswlib", "ivf_flat", "faiss_ivf_flat")  # the lab's ticks
SEEDED_KINDS = frozenset({"hnsw", "ivf_flat", "ivf_pq"})  # ours, with a random seed
# Our from-scratch indexes are written to be read; past these sizes they are too slow.
SCRATCH_LIMITS: dict[str, int] = {
    "hnsw": 200_000,
    "kdtree": 50_000,
    "ivf_pq": 100_000,
    "pq": 100_000,
}
