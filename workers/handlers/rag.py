"""Chapter 6's handlers: planning by search (MCTS)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from learn.playgrounds.rag import MCTSParams
from workers.handlers import Job


def mcts(p: MCTSParams, job: Job) -> dict[str, Any]:
    from learn.lab.mcts import mcts as search
    from learn.lab.mcts import play, winner

    found = search(p.board, p.simulations, p.c, p.seed, emit=job.emit)
    after = play(p.board, found.move, found.player)
    return {
        **asdict(found),
        "board": p.board,
        "after": after,
        "winner": winner(after),
        "device": "cpu",
    }
