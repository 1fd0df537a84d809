"""A small, readable Llama in torch: SmolLM2-135M-Instruct's architecture.

The architecture, top to bottom (SmolLM2-135M numbers in brackets):

    ids (B, T) -> token embedding (vocab 49152 x dim 576)
      x 30 blocks:  x = x + Attention(RMSNorm(x))     9 query heads, 3 key/value heads (GQA),
                    x = x + SwiGLU(RMSNorm(x))        head_dim 64, RoPE theta 100000, hidden 1536
    -> RMSNorm -> logits = x @ embedding.T            (tied embeddings: no separate lm_head)

Matrices are kept (in, out), the transpose of ``nn.Linear``'s, because decoding one token
is a matrix-vector product per weight and that layout is the faster one to stream on CPU.
The weights come from SmolLM2's GGUF (``learn.lab.llama_gguf``); ``learn.lab.llama_hf``
copies them into transformers' ``LlamaForCausalLM``, whose float32 logits on CPU equal ours.

Shapes use the same names everywhere: B batch, T new tokens this call, S cached positions
(keys), nh query heads, nkv key/value heads, hs head size, C model width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learn.lab.attention import apply_rope, rope_cos_sin
from learn.lab.facts import SMOLLM2

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from learn.lab.kvcache import KVCache


@dataclass
class LlamaConfig:
    """The model's shape; the defaults are SmolLM2-135M's (``learn.lab.facts.SMOLLM2``)."""

    vocab_size: int = SMOLLM2.vocab_size
    dim: int = SMOLLM2.dim  # C
    n_layers: int = SMOLLM2.n_layers
    n_heads: int = SMOLLM2.n_heads  # nh
    n_kv_heads: int = SMOLLM2.n_kv_heads  # nkv: each key/value head serves nh // nkv query heads
    hidden_dim: int = SMOLLM2.hidden_dim  # SwiGLU inner width
    norm_eps: float = 1e-5
    rope_theta: float = SMOLLM2.rope_theta
    max_seq_len: int = SMOLLM2.max_seq_len
    bos_id: int = 1
    eos_id: int = 2  # <|im_end|> for the instruct model

    @property
    def head_dim(self) -> int:  # hs
        return self.dim // self.n_heads


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

    weight_layout = "in_out"  # tells quantized_models.linear_weight this is nn.Linear's transpose

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

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C) -> q (B, nh, T, hs), k and v (B, nkv, T, hs), RoPE applied to q and k
        (``cos``/``sin`` broadcast against (B, heads, T, hs))."""
        B, T, _ = x.shape
        sizes = [self.nh * self.hs, self.nkv * self.hs, self.nkv * self.hs]
        q, k, v = self.wqkv(x).split(sizes, dim=-1)
        q = q.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

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
        q, k, v = self.project(x, cos, sin)
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

    rope_cos: Tensor  # buffers, registered in __init__
    rope_sin: Tensor

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        # Tied embeddings: one (C, vocab) matrix; column i embeds token i, and logits are
        # x @ it. Stored (C, vocab) rather than (vocab, C) for the fast matrix-vector layout.
        self.embed = nn.Parameter(torch.empty(cfg.dim, cfg.vocab_size))
        self.embed_q: nn.Module | None = None  # the table quantized (see quantize_tied_embedding)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # The RoPE tables are buffers, so ``.to(device or dtype)`` moves them with the weights
        # (a plain attribute would stay behind); not persistent: rebuilt from the config.
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_rope()

    @classmethod
    def from_state_dict(cls, cfg: LlamaConfig, sd: dict[str, Tensor]) -> Llama:
        """An inference model that takes ``sd``'s tensors as they are (device, dtype, no copy).

        Built on the meta device, so no memory goes to weights about to be replaced.
        """
        with torch.device("meta"):
            model = cls(cfg)
        model.load_state_dict(sd, assign=True)
        model.init_rope()  # the tables were made on meta: make them where the weights are
        return model.eval().requires_grad_(False)

    def init_rope(self) -> None:
        """(Re)compute the RoPE cos/sin tables, (max_seq_len, hs) each, on the weights'
        device and in their dtype."""
        cfg = self.config
        cos, sin = rope_cos_sin(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta, self.device)
        self.rope_cos, self.rope_sin = cos.to(self.dtype), sin.to(self.dtype)

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
        returns rows and whose ``forward(x)`` returns logits (``learn.lab.quantized_models``)."""
        self.embed_q = make(self.embed.detach().t())
        self.embed = None

    def _rope(self) -> tuple[Tensor, Tensor]:
        """(cos, sin), each (max_seq_len, hs)."""
        return self.rope_cos, self.rope_sin

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
        cos, sin = self.rope_cos[start_pos:end], self.rope_sin[start_pos:end]  # (T, hs)
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
# Looking inside, and cheaper copies to draft with


@dataclass
class NextTokenView:
    tokens: list[str]  # the prompt, one decoded string per token (T,)
    attention: list[list[list[float]]]  # (nh, T, T) softmax weights of ``layer``, row = query
    top: list[tuple[int, str, float]]  # the most likely next tokens: (id, text, probability)
    layer: int
    device: str
    # the same ``top`` tokens' probabilities under softmax(logits / T), for each T asked
    probs_at: dict[float, list[float]] = field(default_factory=dict)


@torch.inference_mode()
def inspect_next_token(
    model: Llama,
    tokenizer: Tokenizer,
    ids: list[int],
    layer: int,
    top: int = 20,
    temperatures: tuple[float, ...] = (),
) -> NextTokenView:
    """One forward pass over ``ids``: attention weights of ``layer`` and the top next tokens
    (ranked at temperature 1), with their probabilities at each of ``temperatures``."""
    if not 0 <= layer < model.config.n_layers:
        raise ValueError(f"layer must be in 0..{model.config.n_layers - 1}, got {layer}")
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    logits, weights = model.forward_with_attention(x, layer)  # (1, T, V), (1, nh, T, T)
    last = logits[0, -1].float()  # (V,)
    p, i = last.softmax(-1).topk(top)
    probs_at = {t: (last / t).softmax(-1)[i].tolist() for t in temperatures}
    return NextTokenView(
        probs_at=probs_at,
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
    draft.embed, draft.embed_q, draft.norm = model.embed, model.embed_q, model.norm
    draft.layers = nn.ModuleList(list(model.layers)[:n_layers])
    draft.rope_cos, draft.rope_sin = model.rope_cos, model.rope_sin
    return draft.eval()


def half_precision(model: Llama, dtype: torch.dtype = torch.float16) -> Llama:
    """A copy with weights in 16-bit floats: half the bytes to read per token.

    The matrices are kept as transposed views of (out, in) tensors: for 16-bit weights
    that is the layout PyTorch's CPU matrix-vector kernels read fastest.
    """
    sd = {}
    for name, w in model.state_dict().items():
        w16 = w.to(dtype)
        sd[name] = w16.t().contiguous().t() if w.ndim == 2 else w16
    return Llama.from_state_dict(model.config, sd)
