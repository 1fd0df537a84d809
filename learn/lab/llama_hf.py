"""Our Llama's weights in Hugging Face transformers' ``LlamaForCausalLM``: the reference
the tests compare logits and ``generate`` against, and the baseline the benches time.

Only names and layouts change: our fused Q/K/V and gate/up matrices are split, and every
(in, out) matrix is transposed back to ``nn.Linear``'s (out, in).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from learn.lab.llama import Llama, LlamaConfig


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
