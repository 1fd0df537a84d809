"""Models loaded once per worker process and kept for the next job."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from learn.lab.embeddings import Encoder


@cache
def device() -> str:
    from learn.lab.embeddings import pick_device

    return pick_device()


@cache
def versions() -> dict[str, str]:
    from learn.lab.models import library_versions

    return library_versions()


@cache
def encoder() -> Encoder:
    from learn.lab.embeddings import Encoder

    return Encoder(device=device())
