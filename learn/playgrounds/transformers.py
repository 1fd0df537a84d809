"""Chapter 4, transformers: attention inside SmolLM2, positional encodings, generation.

Prompt lengths are counted in characters here (the web process loads no tokenizer); the
worker also refuses a prompt whose tokens would not fit, with the same kind of message.
"""

from __future__ import annotations

from pydantic import Field

from learn.lab.facts import SMOLLM2
from learn.playgrounds.base import Playground, PlaygroundParams, Seed, register


class GenerateParams(PlaygroundParams):
    prompt: str = Field(
        default="Explain in two sentences why the sky is blue.", min_length=1, max_length=2_000
    )
    max_new_tokens: int = Field(default=64, ge=1, le=256)
    temperature: float = Field(default=0.7, ge=0, le=2, description="0 = greedy")
    top_k: int = Field(default=50, ge=0, le=1_000, description="0 = off")
    top_p: float = Field(default=0.95, gt=0, le=1, description="1 = off")
    seed: Seed = 0


class AttentionParams(PlaygroundParams):
    prompt: str = Field(
        default="The cat sat on the mat because it was tired.", min_length=1, max_length=600
    )
    layer: int = Field(default=5, ge=0, lt=SMOLLM2.n_layers)
    chat: bool = Field(default=False, description="wrap the prompt in the chat template")


class PositionsParams(PlaygroundParams):
    positions: int = Field(default=128, ge=2, le=1_024)
    dims: int = Field(default=64, ge=2, le=512, multiple_of=2, description="even")
    rope_base: float = Field(default=10_000.0, ge=10, le=10_000_000)


HANDLERS = "workers.handlers.transformers"

register(
    Playground(
        slug="attention",
        title="Attention inside SmolLM2",
        chapter="transformers",
        summary="One forward pass: any layer's attention weights per head (GQA groups "
        "shown) and the next-token distribution under a temperature you choose.",
        params=AttentionParams,
        handler=f"{HANDLERS}:attention",
        queue="gpu",
    ),
    Playground(
        slug="positions",
        title="Positional encodings",
        chapter="transformers",
        summary="Sinusoidal encodings and their similarity by distance; RoPE's score "
        "between the same two vectors as they move apart.",
        params=PositionsParams,
        handler=f"{HANDLERS}:positions",
        time_limit=60,
    ),
    Playground(
        slug="generate",
        title="Generate",
        chapter="transformers",
        summary="SmolLM2 continues your prompt token by token with temperature, top-k "
        "and top-p; tokens per second, time to first token, latency by position.",
        params=GenerateParams,
        handler=f"{HANDLERS}:generate",
        queue="gpu",
        time_limit=300,
        live=True,
    ),
)
