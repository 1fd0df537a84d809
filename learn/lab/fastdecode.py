"""Decoding at the speed of the hardware: a static KV cache and one compiled decode step.

``learn.lab.decoding.generate`` is the readable loop: every step is a fresh Python walk
over the model, the cache's views grow by one position, and the next token comes back to
the host (``.item()``) before the next step starts. That costs little per op, but a
135M-parameter model runs ~600 small ops per token, so on a fast device the Python and
the kernel launches, not the weights, set the pace. gpt-fast's recipe removes both:

- a **static KV cache**, one preallocated (B, nkv, P, hs) buffer per layer, written in
  place at the positions given as a tensor; every decode step sees the same shapes
  (attention runs over all P positions, the ones not written yet masked out);
- **prefill separate from decode**: the prompt is one eager forward (its length varies),
  then every token is one call of the same fixed-shape *decode step*;
- the step compiled with ``torch.compile`` (inductor: fused C++ loops on the CPU; on CUDA
  ``mode="reduce-overhead"`` replays it as one CUDA graph, no Python per layer);
- **sampling on the device**: greedy is an argmax, a draw is the Gumbel-max trick
  (argmax of logits + temperature x Gumbel noise: the same distribution as
  ``torch.multinomial`` over softmax(logits / temperature)) with its noise drawn outside
  the step, so nothing waits for the host between tokens. The host reads tokens back
  every ``check_every`` steps to stream them and look for a stop.

Measured on a 2-core CPU (``bench/generate.py``, section 6): the compiled step beats the
eager loop for the int8 and int4 copies (by about a quarter), but not for float32, where
``generate`` runs on weights pre-packed for oneDNN (``learn.lab.packed``): inductor's own
matmuls read the weights at about half that speed, and it cannot lower the packed op
(nor does its ``freezing`` pre-packing help here). The compile takes 10-70 s the first
time and is then reused.

The step uses the model's own modules (norms, fused QKV, SwiGLU, tied output), so the
quantized copies of ``learn.lab.quantized_models`` (int8 / int4 weight-only layers) run
through it unchanged. In float32 its greedy tokens equal ``generate``'s.

Shapes: B batch, T tokens this call, P cache positions (static), nh / nkv query and
key-value heads, hs head size, C width, V vocabulary.
"""

from __future__ import annotations

import math
import time
import types
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from learn.lab.decoding import Generation, TextStream, Tokenizer, _finish, stop_set, sync
from learn.lab.events import Emit, no_emit
from learn.lab.kvcache import KVCache

POSITION_BUCKET = 128  # cache lengths round up to this, so a compiled step is reused


class StaticKVCache:
    """Keys and values, one preallocated (B, nkv, P, hs) pair of buffers per layer.

    ``update`` writes at positions given as a tensor (``index_copy_``), in place, and
    returns the whole buffers: the shapes never change, which is what lets a decode step
    be compiled once and captured as a CUDA graph.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_pos: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        shape = (batch, n_kv_heads, max_pos, head_dim)  # (B, nkv, P, hs)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_pos = max_pos
        for t in self.k + self.v:  # CUDA graphs replay with these very buffers (no copies)
            torch._dynamo.mark_static_address(t)

    # the same constructor arguments as KVCache's, so the same shaping from a model's config
    for_model = classmethod(KVCache.for_model.__func__)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.k + self.v)

    def update(self, layer: int, pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, nkv, T, hs) at positions ``pos`` (T,); return the full buffers."""
        self.k[layer].index_copy_(2, pos, k)
        self.v[layer].index_copy_(2, pos, v)
        return self.k[layer], self.v[layer]  # (B, nkv, P, hs) each


def _attention(model: Any, layer: int, x: Tensor, cache: StaticKVCache, pos: Tensor) -> Tensor:
    """Block ``layer``'s attention for x (B, T, C) at positions pos (T,) -> (B, T, C).

    Prefill (T > 1, from position 0) attends causally within the prompt, as the eager path
    does. A decode step (T = 1) attends over all P cached positions with a mask; the query
    heads that share a key/value head are laid out as that head's queries, so grouped-query
    attention needs no repeated keys: q (B, nkv, group, hs) against k (B, nkv, P, hs).
    """
    a = model.layers[layer].attention
    B, T, _ = x.shape
    q, k, v = a.project(x, model.rope_cos[pos], model.rope_sin[pos])  # RoPE tables (T, hs)
    keys, values = cache.update(layer, pos, k, v)  # (B, nkv, P, hs)
    if T > 1:  # the prompt: its own keys, causal, exactly the eager prefill
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        group = a.nh // a.nkv
        qg = q.reshape(B, a.nkv, group, a.hs)  # (B, nkv, group, hs): head h = kv h // group
        seen = torch.arange(cache.max_pos, device=x.device) <= pos  # (P,) written so far
        # written out rather than SDPA: at one query row the kernel's setup outweighs its
        # work, and the compiler fuses the scale, the mask and the softmax into one loop
        scores = (qg @ keys.transpose(-2, -1)) / math.sqrt(a.hs)  # (B, nkv, group, P)
        y = scores.masked_fill(~seen, -math.inf).softmax(-1) @ values  # (B, nkv, group, hs)
        y = y.reshape(B, a.nh, 1, a.hs)  # (B, nh, 1, hs)
    return a.wo(y.transpose(1, 2).reshape(B, T, a.nh * a.hs))


def forward_static(model: Any, x: Tensor, pos: Tensor, cache: StaticKVCache) -> Tensor:
    """Embedded tokens x (B, T, C) at positions pos (T,) -> last position's logits (B, V).

    T > 1 is a prefill and must start at position 0; T = 1 is a decode step anywhere.

    The embedding lookup (``model.embed_tokens``) stays outside: one row gathered per
    token, and for the int4 table a gather from packed nibbles that the compiler cannot
    trace (it checks the kernel's layout on first use).
    """
    for i, block in enumerate(model.layers):
        x = x + _attention(model, i, block.attention_norm(x), cache, pos)
        x = x + block.feed_forward(block.ffn_norm(x))
    x = model.norm(x[:, -1])  # (B, C)
    return model.output(x).float()  # (B, V)


def pick(logits: Tensor, top_k: int | None, noise: Tensor | None) -> Tensor:
    """The next token (B,) from logits (B, V), on the device, no host sync.

    Greedy without ``noise``: argmax. With it, the Gumbel-max draw: ``noise`` is
    temperature x Gumbel(0, 1) per token (``gumbel_noise``), and argmax(logits + noise)
    is token i with probability softmax(logits / temperature)_i, narrowed to the ``top_k``
    likeliest first. The temperature rides in the noise, so one compiled step serves all.
    """
    if noise is None:
        return logits.argmax(-1)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    return (logits + noise).argmax(-1)


def gumbel_noise(
    shape: tuple[int, ...],
    temperature: float,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> Tensor:
    """temperature x Gumbel(0, 1) noise: -temperature * log(E), E ~ Exp(1)."""
    e = torch.empty(shape, device=device).exponential_(1.0, generator=generator)
    return e.log_().mul_(-temperature)


@dataclass
class CompileReport:
    """What compiling the decode step cost, or why it was not compiled."""

    mode: str  # "eager" | "inductor" | "reduce-overhead"
    compile_s: float  # first call of the compiled step (tracing + codegen), seconds
    error: str  # why it fell back to eager ("" when it did not)


class FastDecoder:
    """A static cache of ``max_pos`` positions and a decode step for ``model``.

    ``compile``: "auto" compiles (inductor on the CPU, CUDA graphs on CUDA) and falls back
    to eager with ``report.error`` set if compiling fails; True insists; False stays eager.
    The compiled step is built once per decoder (``decoder_for`` keeps one per model);
    inductor also keeps its generated code on disk, so a new process compiles faster.
    """

    def __init__(
        self,
        model: Any,
        max_pos: int,
        *,
        compile: bool | str = "auto",
        options: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.options = options
        self.cache = StaticKVCache.for_model(model, max_pos)
        self.max_pos = self.cache.max_pos
        self.want_compile = compile
        self._steps: dict[tuple[bool, int | None], Callable[..., Tensor]] = {}
        self.report = CompileReport("eager", 0.0, "")

    @property
    def compiled(self) -> bool:
        return self.report.mode != "eager"

    def _body(self, top_k: int | None) -> Callable[..., Tensor]:
        """The step after the embedding, as a function of its own (a fresh code object, so
        the compiler keeps exactly one compiled graph for it)."""
        model, cache = self.model, self.cache

        def body(x: Tensor, pos: Tensor, noise: Tensor | None) -> Tensor:
            """x (B, 1, C) at position pos (1,) -> the next token (B, 1)."""
            logits = forward_static(model, x, pos, cache)  # (B, V)
            return pick(logits, top_k, noise)[:, None]

        code = body.__code__.replace()  # a copy: dynamo caches compiled code per code object
        return types.FunctionType(code, body.__globals__, "body", None, body.__closure__)

    def step(self, sampled: bool = False, top_k: int | None = None) -> Callable[..., Tensor]:
        """The decode step, greedy or sampled (with ``top_k``), compiled on first use:
        ``step(token (B, 1), pos (1,), noise (B, V) | None) -> next token (B, 1)``,
        ``noise`` from ``noise()`` when sampled, None when greedy."""
        key = (sampled, top_k if sampled else None)
        if key not in self._steps:
            self._steps[key] = self._build(*key)
        return self._steps[key]

    def noise(self, temperature: float, generator: torch.Generator | None = None) -> Tensor:
        """A sampled step's noise (1, V) for ``temperature`` (``gumbel_noise``)."""
        V = self.model.config.vocab_size
        return gumbel_noise((1, V), temperature, generator, self.model.device)

    def _build(self, sampled: bool, top_k: int | None) -> Callable[..., Tensor]:
        eager = self._body(top_k)
        embed = self.model.embed_tokens

        def eager_step(token: Tensor, pos: Tensor, noise: Tensor | None) -> Tensor:
            return eager(embed(token), pos, noise)

        if not self.want_compile or self.report.error:
            return eager_step
        cuda = self.model.device.type == "cuda"
        mode = "reduce-overhead" if cuda else None
        try:
            how: dict[str, Any] = {"options": self.options} if self.options else {"mode": mode}
            body = torch.compile(eager, fullgraph=True, dynamic=False, **how)
            self._warm(body, sampled)
        except Exception as exc:  # no C++ compiler, an op inductor lacks, ...
            if self.want_compile is True:
                raise
            self.report = CompileReport("eager", 0.0, f"{type(exc).__name__}: {exc}"[:300])
            return eager_step
        self.report.mode = mode or "inductor"

        def step(token: Tensor, pos: Tensor, noise: Tensor | None) -> Tensor:
            # The guards (a check of every weight's dtype, shape and strides, ~1 ms a call
            # on a CPU) are skipped: this code object has one graph and the inputs never
            # change kind; were one to, dynamo raises instead of recompiling.
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return body(embed(token), pos, noise)

        return step

    def _warm(self, fn: Callable[..., Tensor], sampled: bool) -> None:
        """Call a freshly compiled step three times (CUDA graphs warm up, then record) and
        add the time to the report. It writes cache position 0, which a prefill rewrites."""
        start = time.perf_counter()
        with torch.inference_mode():  # the inputs too: an inference tensor is guarded on
            token = torch.zeros((1, 1), dtype=torch.long, device=self.model.device)
            x = self.model.embed_tokens(token)  # (1, 1, C)
            pos = torch.zeros(1, dtype=torch.long, device=self.model.device)
            noise = self.noise(1.0) if sampled else None
            for _ in range(3):
                fn(x, pos, noise)
        sync(self.model.device)
        self.report.compile_s += time.perf_counter() - start

    @torch.inference_mode()
    def prefill(self, ids: Sequence[int]) -> Tensor:
        """Run the prompt from position 0, filling the cache: its last logits (1, V)."""
        if not 0 < len(ids) < self.max_pos:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit {self.max_pos}")
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.model.device)  # (1, T)
        pos = torch.arange(len(ids), device=self.model.device)  # (T,)
        return forward_static(self.model, self.model.embed_tokens(x), pos, self.cache)


_DECODERS: weakref.WeakKeyDictionary[Any, dict[tuple[int, str, int], FastDecoder]] = (
    weakref.WeakKeyDictionary()
)


def decoder_for(model: Any, positions: int, *, compile: bool | str = "auto") -> FastDecoder:
    """The model's decoder for at least ``positions`` positions (rounded up to a bucket of
    128, so one compiled step serves many prompt lengths), made once per torch thread
    count and kept as long as the model lives."""
    P = min(-(-positions // POSITION_BUCKET) * POSITION_BUCKET, model.config.max_seq_len)
    mine = _DECODERS.setdefault(model, {})
    key = (P, str(compile), torch.get_num_threads())  # inductor's loops fix their threads
    if key not in mine:
        mine[key] = FastDecoder(model, P, compile=compile)
    return mine[key]


@torch.inference_mode()
def generate_fast(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int | None = None,
    *,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
    compile: bool | str = "auto",
    check_every: int | None = None,
) -> tuple[Generation, FastDecoder]:
    """``decoding.generate`` on the static cache and the (compiled) decode step.

    The host reads tokens back every ``check_every`` steps (default: 1 on the CPU, where a
    step is synchronous anyway; 8 on CUDA), emits them and stops at a stop token; steps
    run past a stop within a chunk are discarded. Each token of a chunk is given the
    chunk's time divided evenly. Sampled tokens follow the same distribution as
    ``generate``'s but not the same draws (the noise comes from ``seed`` differently).
    Returns the generation and the decoder (its ``report`` says how it was compiled).
    """
    device = model.device
    dec = decoder_for(model, len(ids) + max_new_tokens, compile=compile)
    if len(ids) + max_new_tokens > dec.max_pos:
        raise ValueError(f"{len(ids)} + {max_new_tokens} positions exceed {dec.max_pos}")
    every = check_every or (8 if device.type == "cuda" else 1)
    stops = stop_set(model, stop_ids)
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(seed)
    sampled = temperature > 0
    step = dec.step(sampled, top_k)  # compiles on first use (not timed below)
    out = torch.empty((1, max_new_tokens), dtype=torch.long, device=device)  # (1, N)
    pos = torch.tensor([len(ids)], dtype=torch.long, device=device)  # (1,)
    tokens: list[int] = []
    token_ms: list[float] = []
    stream = TextStream(tokenizer)
    stop_reason = "length"
    t0 = time.perf_counter()
    logits = dec.prefill(ids)  # (1, V)
    token = pick(logits, top_k, dec.noise(temperature, gen) if sampled else None)[:, None]
    out[:, 0:1] = token
    done, made = 0, 1  # tokens read back to the host / computed on the device
    while done < max_new_tokens:
        if made - done >= every or made == max_new_tokens:  # read a chunk back
            chunk = out[0, done:made].tolist()  # the only host sync
            ms = (time.perf_counter() - t0) * 1e3 / len(chunk)
            t0 = time.perf_counter()
            for t in chunk:
                tokens.append(t)
                token_ms.append(ms)
                emit("partial", token=t, text=stream.push(t), ms=round(ms, 3))
                if t in stops:
                    stop_reason = "stop_token"
                    break
            done = made
            if stop_reason != "length":
                break
            continue
        # a CUDA graph's output is overwritten by its next replay: keep our own copy
        noise = dec.noise(temperature, gen) if sampled else None  # (1, V)
        token = step(token, pos, noise).clone()  # (1, 1)
        out[:, made : made + 1] = token
        pos.add_(1)
        made += 1
    nbytes = dec.cache.nbytes
    return _finish(tokens, stream, token_ms, len(ids), True, nbytes, stop_reason, device), dec
