"""Chapter 6, RAG, agents and semantic caching: planning by search (MCTS) so far."""

from __future__ import annotations

from pydantic import Field, model_validator

from learn.playgrounds.base import Playground, PlaygroundParams, Seed, register


class MCTSParams(PlaygroundParams):
    board: str = Field(
        default="." * 9,
        min_length=9,
        max_length=9,
        pattern=r"^[XO.]{9}$",
        description="9 cells row by row: X, O or . (X moves first)",
    )
    simulations: int = Field(default=2_000, ge=10, le=20_000)
    c: float = Field(default=1.4, ge=0, le=10, description="exploration constant (UCT)")
    seed: Seed = 0

    @model_validator(mode="after")
    def playable(self) -> MCTSParams:
        from learn.lab.mcts import winner

        x, o = self.board.count("X"), self.board.count("O")
        if x - o not in (0, 1):
            raise ValueError(f"X moves first, so X has as many marks as O or one more ({x}/{o})")
        if winner(self.board):
            raise ValueError("the game is over: start a new one")
        return self


register(
    Playground(
        slug="mcts",
        title="Monte Carlo tree search",
        chapter="rag-agents",
        summary="Play noughts and crosses against MCTS and see how many simulations "
        "it spent on each move before choosing.",
        params=MCTSParams,
        handler="workers.handlers.rag:mcts",
        time_limit=60,
    ),
)
