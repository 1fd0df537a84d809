"""Monte Carlo tree search on tic-tac-toe: search that spends compute at decision time.

Each simulation walks down the tree picking the child with the best UCB1 score (average
result + an exploration bonus for rarely tried moves), adds one new node, plays random
moves to the end of the game, and passes the result back up. After many simulations the
most visited move is the choice; visit counts are the search's "policy".

A board is a 9-character string, cells 0..8 row by row: "X", "O" or "." (empty).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from learn.lab.events import Emit, no_emit

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
EMPTY_BOARD = "." * 9


def winner(board: str) -> str | None:
    """ "X" or "O" if that player has three in a row, "draw" if the board is full, else None."""
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return "draw" if "." not in board else None


def legal_moves(board: str) -> list[int]:
    return [i for i, cell in enumerate(board) if cell == "."]


def play(board: str, move: int, player: str) -> str:
    if board[move] != ".":
        raise ValueError(f"cell {move} is taken")
    return board[:move] + player + board[move + 1 :]


def other(player: str) -> str:
    return "O" if player == "X" else "X"


def to_move(board: str) -> str:
    """X moves first, so X is to move when both have played equally often."""
    return "X" if board.count("X") == board.count("O") else "O"


@dataclass
class Node:
    board: str
    player: str  # whose turn it is on this board
    parent: Node | None = None
    move: int | None = None  # the move that led here
    children: dict[int, Node] = field(default_factory=dict)
    untried: list[int] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0  # summed results for the player who made ``move`` (1 win, 0.5 draw)

    def ucb_child(self, c: float) -> Node:
        """The child maximising mean value + c * sqrt(ln(parent visits) / child visits)."""
        log_n = math.log(self.visits)
        return max(
            self.children.values(),
            key=lambda ch: ch.value / ch.visits + c * math.sqrt(log_n / ch.visits),
        )


@dataclass
class MCTSResult:
    move: int  # the most visited move
    visits: list[int]  # (9,) visits per cell (0 for occupied cells)
    values: list[float | None]  # (9,) mean result of each move for the player to move
    simulations: int
    player: str
    principal_variation: list[int]  # the most visited line of play from the root
    device: str = "cpu"  # plain Python: no tensors


def _rollout(board: str, player: str, rng: random.Random) -> str:
    """Random moves to the end; returns "X", "O" or "draw"."""
    while (result := winner(board)) is None:
        board = play(board, rng.choice(legal_moves(board)), player)
        player = other(player)
    return result


def mcts(
    board: str = EMPTY_BOARD,
    simulations: int = 1000,
    c: float = 1.4,
    seed: int = 0,
    *,
    emit: Emit = no_emit,
) -> MCTSResult:
    """Search from ``board`` (the player to move is inferred) and return visit counts.

    Emits ``partial`` with ``simulation`` and the current ``visits`` 20 times during the search.
    """
    if len(board) != 9 or set(board) - set("XO."):
        raise ValueError(f"board must be 9 cells of X, O or '.', got {board!r}")
    if winner(board) is not None:
        raise ValueError("the game is already over")
    rng = random.Random(seed)
    root = Node(board, to_move(board), untried=legal_moves(board))
    every = max(1, simulations // 20)
    for sim in range(1, simulations + 1):
        node = root
        # 1. selection: descend through fully expanded nodes
        while not node.untried and node.children:
            node = node.ucb_child(c)
        # 2. expansion: add one untried move
        if node.untried:
            move = node.untried.pop(rng.randrange(len(node.untried)))
            child_board = play(node.board, move, node.player)
            done = winner(child_board) is not None
            child = Node(
                child_board,
                other(node.player),
                node,
                move,
                untried=[] if done else legal_moves(child_board),
            )
            node.children[move] = child
            node = child
        # 3. simulation: random play to the end
        result = _rollout(node.board, node.player, rng)
        # 4. backpropagation: each node scores the result for the player who moved into it
        while node is not None:
            node.visits += 1
            if node.parent is not None:
                mover = node.parent.player
                node.value += 1.0 if result == mover else 0.5 if result == "draw" else 0.0
            node = node.parent
        if sim % every == 0 or sim == simulations:
            emit("partial", simulation=sim, visits=_visits(root))
    visits = _visits(root)
    best = max(root.children, key=lambda m: root.children[m].visits)
    values: list[float | None] = [None] * 9
    for m, ch in root.children.items():
        values[m] = ch.value / ch.visits
    pv, node = [], root
    while node.children:
        node = max(node.children.values(), key=lambda ch: ch.visits)
        pv.append(node.move)
    return MCTSResult(best, visits, values, simulations, root.player, pv)  # type: ignore[arg-type]


def _visits(root: Node) -> list[int]:
    out = [0] * 9
    for m, ch in root.children.items():
        out[m] = ch.visits
    return out
