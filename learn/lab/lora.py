"""LoRA on our own Llama: a low-rank update beside each frozen projection (Hu et al., 2021).

A frozen weight W (in, out) gets two small trainable matrices beside it, A (r, in) and
B (out, r), and the layer computes

    y = x @ W  +  (x @ Aᵀ @ Bᵀ) · alpha / r          x (..., in) -> y (..., out)

B starts at zero, so at step 0 the model is exactly the base model; training moves only A
and B, r · (in + out) numbers per matrix instead of in · out. After training the update
folds back into one matrix, W' = W + (B A)ᵀ · alpha / r, and costs nothing at inference.

The adapters are peft's (``peft.tuners.lora.Linear``), injected into our ``Llama``'s
projections (``wqkv``, ``wo``; ``w13``, ``w2`` for the MLP). Our ``Linear`` keeps its weight
(in, out), the transpose of ``nn.Linear``'s, which peft calls ``fan_in_fan_out``; peft
dispatches our class to its LoRA layer through ``LoraConfig._register_custom_module``.
Fused projections get one adapter each: the rank-r update of ``wqkv`` is shared by the
query, key and value heads (it is the same as three adapters with a common A).

Shapes: (batch, T) token ids, V vocabulary, r rank; A and B always name the adapter's two
matrices.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learn.lab.events import Emit, no_emit
from learn.lab.llama import Linear, Llama

if TYPE_CHECKING:
    from peft.tuners.lora import Linear as LoraLinear
    from tokenizers import Tokenizer

    from learn.lab.lora_pairs import Pair

TARGETS: dict[str, tuple[str, ...]] = {
    "attention": ("wqkv", "wo"),
    "attention+mlp": ("wqkv", "wo", "w13", "w2"),
}
IGNORE = -100  # label of a position whose next token is not scored (prompt, padding)
ADAPTER = "default"  # peft's name for the one adapter


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8  # r
    alpha: float = 16.0  # the update is scaled by alpha / r
    targets: str = "attention+mlp"  # a key of TARGETS
    dropout: float = 0.0  # on the adapter's input, while training

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def with_lora(base: Llama, settings: LoraSettings, *, seed: int = 0) -> Llama:
    """A copy of ``base`` with LoRA adapters on ``settings.targets``; ``base`` is untouched.

    ``copy.deepcopy`` copies the module tree, so adapters are injected into the copy's
    modules, never the base's. The frozen tensors themselves are shared (``memo``): they
    are never written (no gradient, no in-place merge: see ``merged``), and a 135M-parameter
    model is not duplicated per run. A is initialised from ``seed`` (Kaiming-uniform), B
    at zero.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import Linear as LoraLinear

    if settings.targets not in TARGETS:
        raise ValueError(f"targets must be one of {sorted(TARGETS)}, got {settings.targets!r}")
    if settings.rank < 1:
        raise ValueError(f"rank must be at least 1, got {settings.rank}")
    shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    model = copy.deepcopy(base, shared).requires_grad_(False)
    for module in model.modules():
        if isinstance(module, Linear):  # what peft reads to size A and B
            module.in_features, module.out_features = module.weight.shape
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(TARGETS[settings.targets]),
        fan_in_fan_out=True,  # our weights are (in, out)
        bias="none",
    )
    config._register_custom_module({Linear: LoraLinear})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model)
    for p in adapter_parameters(model):  # float32 adapters even on a bfloat16 base
        p.data = p.data.float()
    return model


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """The model's LoRA layers by module name (``layers.0.attention.wqkv``, ...)."""
    from peft.tuners.lora import Linear as LoraLinear

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """A and B of every adapter: all that training changes."""
    return [p for name, p in model.named_parameters() if ".lora_" in name]


def delta_weight(layer: LoraLinear) -> Tensor:
    """The layer's update in our layout: (B A)ᵀ · alpha / r = Aᵀ Bᵀ · alpha / r, (in, out)."""
    a = layer.lora_A[ADAPTER].weight  # (r, in)
    b = layer.lora_B[ADAPTER].weight  # (out, r)
    return (a.t() @ b.t()) * layer.scaling[ADAPTER]  # (in, out)


@torch.no_grad()
def merged(model: Llama) -> Llama:
    """A plain ``Llama`` whose projections are W + ΔW: new tensors, the base's untouched.

    (peft's own ``merge`` adds ΔW to the base weight in place, which would change the base
    model that ``with_lora`` shares.)
    """
    layers = lora_layers(model)
    sd: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        owner = key.removesuffix(".weight")
        if owner in layers:
            value = (value.float() + delta_weight(layers[owner]).float()).to(value.dtype)
        sd[key] = value
    return Llama.from_state_dict(model.config, sd)


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters as peft saves them (``layers.0.attention.wqkv.lora_A.weight``, ...),
    contiguous float32 tensors on the CPU, ready for ``safetensors``."""
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return {k: v.detach().float().cpu().contiguous() for k, v in sd.items()}


def adapter_file(model: nn.Module, settings: LoraSettings, base_name: str) -> bytes:
    """The adapters as a safetensors file, with what loading them needs in its metadata."""
    from safetensors.torch import save

    meta = {
        "format": "pt",
        "base_model": base_name,
        "rank": str(settings.rank),
        "alpha": f"{settings.alpha:g}",
        "target_modules": ",".join(TARGETS[settings.targets]),
        "layout": "Forward Pass's Llama (learn/lab/llama.py): fused wqkv and w13, weights "
        "(in, out), so delta = (lora_B @ lora_A).T * alpha / rank",
    }
    return save(adapter_state_dict(model), metadata=meta)


# transformers' LlamaForCausalLM splits what we fuse: each of our projections -> its block
# and its parts, in the order of our output columns
HF_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wqkv": ("self_attn", ("q_proj", "k_proj", "v_proj")),
    "wo": ("self_attn", ("o_proj",)),
    "w13": ("mlp", ("gate_proj", "up_proj")),
    "w2": ("mlp", ("down_proj",)),
}
HF_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def transformers_state_dict(model: Llama) -> dict[str, Tensor]:
    """The adapters for transformers' ``LlamaForCausalLM``, under PEFT's saved names.

    A fused projection's output columns are its parts' outputs side by side, so its update
    B·A splits by rows of B: q_proj gets (A, B[:nq]), k_proj (A, B[nq:nq+nkv]), and so on;
    each part's update is exactly the fused one's slice (the same A, copied).
    """
    cfg = model.config
    nq, nkv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    split = {"wqkv": [nq, nkv, nkv], "wo": [cfg.dim], "w13": [cfg.hidden_dim] * 2, "w2": [cfg.dim]}
    sd: dict[str, Tensor] = {}
    for name, layer in lora_layers(model).items():
        index, part = int(name.split(".")[1]), name.rsplit(".", 1)[1]
        a = layer.lora_A[ADAPTER].weight.detach().float().cpu()  # (r, in)
        b = layer.lora_B[ADAPTER].weight.detach().float().cpu()  # (out, r)
        block, names = HF_PARTS[part]
        for proj, rows in zip(names, b.split(split[part], 0), strict=True):
            key = f"base_model.model.model.layers.{index}.{block}.{proj}"
            sd[f"{key}.lora_A.weight"] = a.clone()
            sd[f"{key}.lora_B.weight"] = rows.contiguous()  # (out of this part, r)
    return sd


def transformers_peft_zip(model: Llama, settings: LoraSettings, base_id: str = HF_BASE) -> bytes:
    """A zip of ``adapter_model.safetensors`` and ``adapter_config.json``: what
    ``peft.PeftModel.from_pretrained(LlamaForCausalLM of base_id, folder)`` loads."""
    import io
    import tempfile
    import zipfile
    from pathlib import Path

    from peft import LoraConfig
    from safetensors.torch import save

    parts = [proj for part in TARGETS[settings.targets] for proj in HF_PARTS[part][1]]
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=parts,
        base_model_name_or_path=base_id,
        inference_mode=True,
    )
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(buffer, "w") as bundle:
        config.save_pretrained(folder)
        bundle.write(Path(folder) / "adapter_config.json", "adapter_config.json")
        weights = save(transformers_state_dict(model), metadata={"format": "pt"})
        bundle.writestr("adapter_model.safetensors", weights)
    return buffer.getvalue()


@dataclass(frozen=True)
class Sizes:
    trainable: int  # adapter parameters
    base: int  # the base model's parameters
    adapter_bytes: int  # float32 adapters
    base_bytes: int  # the base model's weights as loaded (its dtype)

    @property
    def share(self) -> float:
        return self.trainable / self.base


def sizes(model: nn.Module) -> Sizes:
    adapters = adapter_parameters(model)
    ids = {id(p) for p in adapters}
    base = [p for p in model.parameters() if id(p) not in ids]
    return Sizes(
        trainable=sum(p.numel() for p in adapters),
        base=sum(p.numel() for p in base),
        adapter_bytes=sum(p.numel() * 4 for p in adapters),
        base_bytes=sum(p.numel() * p.element_size() for p in base),
    )


# ---------------------------------------------------------------------------------------
# Data: a pair in the chat template, the loss on the response only


@dataclass(frozen=True)
class Example:
    ids: list[int]  # the prompt in the chat template, then the response and <|im_end|>
    labels: list[int]  # the same, with IGNORE where the token is not to be learned


def prompt_ids(tokenizer: Tokenizer, instruction: str) -> list[int]:
    """The chat template with one user turn, ready for the assistant's reply."""
    from learn.lab.llama_gguf import chat_ids

    return chat_ids(tokenizer, [{"role": "user", "content": instruction}])


def encode_pair(tokenizer: Tokenizer, pair: Pair, end: str = "<|im_end|>") -> Example:
    """One training sequence: prompt ids (not learned), response ids and ``end`` (learned)."""
    prompt = prompt_ids(tokenizer, pair.instruction)
    reply = tokenizer.encode(pair.response + end, add_special_tokens=False).ids
    return Example(ids=prompt + reply, labels=[IGNORE] * len(prompt) + reply)


def collate(
    examples: Sequence[Example], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Right-padded (batch, T) ids and labels; padding is never learned (causal attention means
    it cannot change the positions before it)."""
    T = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
    return ids.to(device), labels.to(device)


def response_loss(model: Llama, ids: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the learned positions. ids, labels (batch, T)."""
    logits = model(ids)  # (batch, T, V) float32
    V = logits.shape[-1]
    # position t predicts token t+1: drop the last logits and the first labels
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


class LossDiverged(ValueError):
    """Training blew up: the loss became NaN or infinite, or worse than twice a uniform
    guess over the vocabulary (``ln V`` nats), from which a run does not come back."""

    def __init__(self, step: int, lr: float, loss: float, vocab: int) -> None:
        self.step, self.lr, self.loss = step, lr, loss
        what = (
            f"became {loss}"
            if not math.isfinite(loss)
            else f"reached {loss:.1f}, more than twice what guessing uniformly among all "
            f"{vocab:,} tokens scores ({math.log(vocab):.1f})"
        )
        super().__init__(
            f"Training diverged: at step {step} the loss {what}. With a learning rate of "
            f"{lr:g} each update overshoots, and the adapter's weights grow until its output "
            "swamps the model's. Try a learning rate ten times smaller (1e-4 to 3e-3 suits "
            "LoRA)."
        )


@dataclass
class LoraTrainer:
    """AdamW on the adapters only, ``batch_size`` pairs a step, the pairs shuffled each epoch.

    Its state (losses, tokens, time) is readable at any point, also after a cancelled run.
    """

    model: Llama
    examples: list[Example]
    lr: float = 1e-3
    batch_size: int = 4
    pad_id: int = 0
    seed: int = 0
    max_grad_norm: float = 1.0
    losses: list[float] = field(default_factory=list)
    tokens: int = 0  # sequence tokens through forward and backward (padding not counted)
    seconds: float = 0.0  # wall time of the steps
    _order: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.params = adapter_parameters(self.model)
        if not self.params:
            raise ValueError("the model has no adapters: make it with with_lora")
        self.optimizer = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def _batch(self) -> list[Example]:
        picked = []
        while len(picked) < self.batch_size:
            if not self._order:
                self._order = torch.randperm(len(self.examples), generator=self.generator).tolist()
            picked.append(self.examples[self._order.pop()])
        return picked

    def step(self) -> float:
        """One optimiser step; the batch's loss before it. Raises LossDiverged."""
        batch = self._batch()
        started = time.perf_counter()
        self.model.train()
        ids, labels = collate(batch, self.pad_id, self.model.device)
        loss = response_loss(self.model, ids, labels)
        value = loss.item()
        vocab = self.model.config.vocab_size
        if not math.isfinite(value) or value > 2 * math.log(vocab):
            raise LossDiverged(self.steps + 1, self.lr, value, vocab)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
        self.seconds += time.perf_counter() - started
        self.tokens += sum(len(e.ids) for e in batch)
        self.losses.append(value)
        self.model.eval()
        return value

    def run(self, steps: int, *, emit: Emit = no_emit, time_budget_s: float | None = None) -> bool:
        """Train until ``steps`` steps in all; after each, ``emit("partial", step, steps,
        loss, tokens_per_s)`` and a progress event. False when ``time_budget_s`` seconds of
        training stopped it first."""
        while self.steps < steps:
            loss = self.step()
            emit(
                "partial",
                step=self.steps,
                steps=steps,
                loss=round(loss, 4),
                tokens_per_s=round(self.tokens_per_s, 1),
            )
            emit(
                "progress",
                pct=100 * self.steps / steps,
                message=f"step {self.steps} of {steps}: loss {loss:.3f}",
            )
            if time_budget_s is not None and self.seconds > time_budget_s:
                return self.steps >= steps
        return True


def answer(
    model: Llama, tokenizer: Tokenizer, instruction: str, max_new_tokens: int
) -> dict[str, Any]:
    """The model's greedy reply to one instruction in the chat template."""
    from learn.lab.decoding import generate

    model.eval()
    out = generate(model, prompt_ids(tokenizer, instruction), max_new_tokens, tokenizer=tokenizer)
    return {"text": out.text.replace("<|im_end|>", "").strip(), "tokens": len(out.tokens)}
