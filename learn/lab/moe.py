"""A toy top-k mixture-of-experts layer, with the routing statistics that make MoE tricky.

Each token's vector goes to a router (one linear layer) that scores ``n_experts`` small
SwiGLU feed-forward networks; the token is processed by its ``top_k`` best experts only and
their outputs are mixed with the router's softmax weights renormalised over those k. So
the layer holds n_experts times the parameters of one feed-forward but spends only k
experts' compute per token. The catch is balance: if the router favours a few experts,
they overflow while others idle. ``RoutingStats`` reports the load per expert and the
Switch Transformer auxiliary loss that training adds to even it out.

Shapes: x (N, C) with N tokens of width C; E experts; k experts per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learn.lab.events import Emit, no_emit


@dataclass
class RoutingStats:
    tokens_per_expert: list[int]  # (E,) how many tokens picked each expert (sum = N * k)
    load_fraction: list[float]  # (E,) tokens_per_expert / (N * k)
    mean_router_prob: list[float]  # (E,) average softmax probability the router gave each
    load_balance_loss: float  # E * sum(load_fraction * mean_router_prob); 1.0 = balanced
    max_over_mean_load: float  # busiest expert / average expert (1.0 = balanced)
    dropped_tokens: int  # token-slots over capacity (0 when capacity is unlimited)


class Expert(nn.Module):
    """One SwiGLU feed-forward: w2(silu(x w1) * (x w3))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Module):
    """Top-k routed experts. ``forward(x (N, C)) -> (y (N, C), RoutingStats)``.

    ``capacity_factor``: if set, each expert takes at most
    ceil(capacity_factor * N * k / E) token-slots; the rest are dropped (contribute zero),
    as in Switch Transformer training.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        n_experts: int,
        top_k: int = 2,
        capacity_factor: float | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..{n_experts}, got {top_k}")
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, capacity_factor
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim, hidden) for _ in range(n_experts))

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, C) -> router probs (N, E), chosen experts (N, k), mixing weights (N, k).

        Mixing weights are the chosen experts' probabilities renormalised to sum to 1.
        """
        probs = self.router(x).softmax(-1)  # (N, E)
        weights, experts = probs.topk(self.top_k, dim=-1)  # (N, k) each
        return probs, experts, weights / weights.sum(-1, keepdim=True)

    def forward(self, x: Tensor) -> tuple[Tensor, RoutingStats]:
        N = x.shape[0]
        E, k = self.n_experts, self.top_k
        probs, experts, weights = self.route(x)
        capacity = N * k
        if self.capacity_factor is not None:
            capacity = max(1, int(-(-self.capacity_factor * N * k // E)))  # ceil
        y = torch.zeros_like(x)
        dropped = 0
        for e, expert in enumerate(self.experts):  # loop over experts, not tokens
            token, slot = (experts == e).nonzero(as_tuple=True)  # tokens routed to e
            if len(token) > capacity:  # first come, first served
                dropped += len(token) - capacity
                token, slot = token[:capacity], slot[:capacity]
            if len(token):
                y.index_add_(0, token, expert(x[token]) * weights[token, slot, None])
        counts = torch.bincount(experts.flatten(), minlength=E)  # (E,)
        load = counts.float() / (N * k)
        mean_prob = probs.mean(0)
        stats = RoutingStats(
            tokens_per_expert=counts.tolist(),
            load_fraction=load.tolist(),
            mean_router_prob=mean_prob.tolist(),
            load_balance_loss=float(E * (load * mean_prob).sum()),
            max_over_mean_load=float(counts.max() / counts.float().mean()),
            dropped_tokens=dropped,
        )
        return y, stats


@torch.inference_mode()
def moe_demo(
    n_tokens: int = 512,
    dim: int = 64,
    n_experts: int = 8,
    top_k: int = 2,
    *,
    router_skew: float = 0.0,
    capacity_factor: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    emit: Emit = no_emit,
) -> dict[str, object]:
    """Route random tokens through a freshly initialised MoE and report the balance.

    ``router_skew`` > 0 adds that much to the router's bias toward expert 0, mimicking a
    router that collapses onto a favourite; watch the load and the balance loss rise.
    """
    torch.manual_seed(seed)
    layer = MoE(dim, 2 * dim, n_experts, top_k, capacity_factor).to(device)
    if router_skew:
        layer.router.weight[0] += router_skew * F.normalize(torch.ones(dim, device=device), dim=0)
    x = torch.randn(n_tokens, dim, device=device) + 1.0  # a shared offset gives skew a handle
    _, stats = layer(x)
    dense_params = sum(p.numel() for p in layer.experts[0].parameters())
    shown = x[:48]  # the routing of the first tokens, for a heatmap
    with torch.no_grad():
        probs, experts, _ = layer.route(shown)  # (48, E), (48, k)
    result = {
        "stats": stats,
        "routing": {
            "probs": [[round(float(p), 4) for p in row] for row in probs.cpu()],
            "chosen": experts.cpu().tolist(),
        },
        "params_total": sum(p.numel() for p in layer.parameters()),
        "params_active_per_token": top_k * dense_params + layer.router.weight.numel(),
        "device": device,
    }
    emit("partial", **stats.__dict__)
    return result
