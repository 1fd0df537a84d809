"""A tiny GPT of our own: GPT-2's architecture at nanoGPT's size, trained from scratch here.

The architecture, top to bottom (the playground's bounds in brackets):

    ids (B, T) -> token embedding wte (V x C) + position embedding wpe (T_max x C)
      x L blocks:  x = x + Attention(LayerNorm(x))    nh heads of hs = C / nh, causal
                   x = x + MLP(LayerNorm(x))          C -> 4C -> C, GELU (tanh form)
    -> LayerNorm -> logits = x @ wte.T                (tied embeddings, as GPT-2)

    L layers [1-6], C width [32-256], T_max context [<= 256], V vocabulary (characters,
    a BPE the learner trained, or SmolLM2's 49,152 tokens for distillation).

Parameter names and layouts are GPT-2's in ``transformers`` (``transformer.h.0.attn.c_attn
.weight`` stored (in, out) like its ``Conv1D``), so ``hf_state_dict`` loads into a
``GPT2LMHeadModel`` of ``gpt2_config(cfg)`` unchanged: that model is the fair peer in the
tests (same logits) and the benchmark (same loss curve, tokens/s side by side).

Shapes use the same names everywhere: B batch, T positions, C width, nh heads, hs head
size, V vocabulary.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LIMITS = {"n_layer": (1, 6), "n_embd": (32, 256), "block_size": (8, 256)}


@dataclass
class GPTConfig:
    vocab_size: int = 256  # V
    block_size: int = 128  # T_max: the longest context the model reads
    n_layer: int = 2  # L
    n_head: int = 4  # nh
    n_embd: int = 64  # C
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"width {self.n_embd} is not divisible by {self.n_head} heads")

    @property
    def head_size(self) -> int:  # hs
        return self.n_embd // self.n_head


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored (in, out), y = x @ W + b."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], -1
        )


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.nh, self.hs = cfg.n_head, cfg.head_size
        self.c_attn = Conv1D(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor, *, weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> (B, T, C), and the softmax weights (B, nh, T, T) if asked for."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        att = None
        if weights:  # written out, so the weights can be shown; same result as SDPA
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs)  # (B, nh, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (B, nh, T, T)
            y = att @ v  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y), att


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Conv1D(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = Conv1D(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, *, weights: bool = False) -> tuple[Tensor, Tensor | None]:
        a, att = self.attn(self.ln_1(x), weights=weights)
        x = x + a  # (B, T, C)
        return x + self.mlp(self.ln_2(x)), att


class TinyGPT(nn.Module):
    """GPT-2 in miniature. ``forward(ids)`` -> logits (B, T, V)."""

    def __init__(self, cfg: GPTConfig, *, seed: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
                "wpe": nn.Embedding(cfg.block_size, cfg.n_embd),
                "h": nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                "ln_f": nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon),
            }
        )
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """GPT-2's initialisation (nanoGPT's reading of it): N(0, 0.02) everywhere, the
        projections into the residual stream scaled by 1/sqrt(2L), biases 0, norms 1."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * residual_std)
            elif name.endswith((".bias",)) and ".ln_" not in name and "ln_f" not in name:
                p.zero_()
            elif ".ln_" in name or "ln_f" in name:
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def forward(self, ids: Tensor, *, attn_layer: int | None = None) -> Tensor:
        """ids (B, T) -> logits (B, T, V). See ``forward_with_attention`` for the weights."""
        return self._run(ids, attn_layer)[0]

    def forward_with_attention(self, ids: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """logits (B, T, V) and layer ``layer``'s attention weights (B, nh, T, T)."""
        logits, att = self._run(ids, layer)
        assert att is not None
        return logits, att

    def _run(
        self, ids: Tensor, attn_layer: int | None, *, last_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        T = ids.shape[1]  # ids (B, T)
        if self.config.block_size < T:
            raise ValueError(f"{T} positions; this model reads at most {self.config.block_size}")
        t = self.transformer
        pos = torch.arange(T, device=ids.device)
        x = t.wte(ids) + t.wpe(pos)  # (B, T, C)
        kept = None
        for i, block in enumerate(t.h):
            x, att = block(x, weights=i == attn_layer)
            kept = att if att is not None else kept
        if last_only:  # decoding needs the last position's logits only
            x = x[:, -1:]  # (B, 1, C)
        x = t.ln_f(x)  # (B, T, C)
        return x @ t.wte.weight.T, kept  # (B, T, V): tied output embedding

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(
        self,
        ids: list[int],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> list[int]:
        """Continue ``ids`` by ``max_new_tokens`` sampled tokens (greedy at temperature 0);
        the context is cropped to the last ``block_size`` positions, as nanoGPT does."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        out = list(ids) or [0]
        for _ in range(max_new_tokens):
            ctx = torch.tensor([out[-self.config.block_size :]], device=self.device)  # (1, T)
            logits = self._run(ctx, None, last_only=True)[0][0, -1]  # (V,)
            if temperature <= 0:
                out.append(int(logits.argmax()))
                continue
            ids_k = None
            if top_k and top_k < logits.numel():  # sample among the k best only (cheaper
                logits, ids_k = torch.topk(logits, top_k)  # than masking 49,152 logits)
            pick = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen))
            out.append(int(ids_k[pick]) if ids_k is not None else pick)
        return out[len(ids) :] if ids else out[1:]


# ------------------------------------------------------------ transformers' GPT-2, files


def gpt2_config(cfg: GPTConfig) -> dict[str, Any]:
    """The ``GPT2Config`` fields of the same architecture (dropout off: we train without)."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }


def hf_state_dict(model: TinyGPT) -> dict[str, Tensor]:
    """Our weights under GPT-2's names, each once (``lm_head`` is tied to ``wte``)."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def to_transformers(model: TinyGPT) -> Any:
    """A ``GPT2LMHeadModel`` with a copy of our weights (float32, on our device)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    peer = GPT2LMHeadModel(GPT2Config(**gpt2_config(model.config))).to(model.device)
    missing, unexpected = peer.load_state_dict(hf_state_dict(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    peer.tie_weights()
    return peer.eval()


def save(model: TinyGPT, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """``model.safetensors`` (GPT-2 names) and ``config.json`` (GPT2Config fields, plus
    ours under ``"forward_pass"``): loads with ``GPT2LMHeadModel.from_pretrained(folder)``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_file({k: v.cpu() for k, v in hf_state_dict(model).items()}, tmp, {"format": "pt"})
    tmp.replace(folder / "model.safetensors")  # a reader never sees half a file
    config = {
        **gpt2_config(model.config),
        "forward_pass": {**asdict(model.config), **(extra or {})},
    }
    write_atomic(folder / "config.json", json.dumps(config, indent=1))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a concurrent reader sees the old file or the new
    one, never half of one (the web process serves these while the worker writes)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load(folder: Path, device: str | torch.device = "cpu") -> tuple[TinyGPT, dict[str, Any]]:
    """The model ``save`` wrote, and its ``forward_pass`` config entry."""
    from safetensors.torch import load_file

    ours = json.loads((folder / "config.json").read_text())["forward_pass"]
    fields = {k: ours[k] for k in GPTConfig.__dataclass_fields__}
    model = TinyGPT(GPTConfig(**fields), seed=0)
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.to(device).eval(), ours
