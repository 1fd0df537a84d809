"""Each chapter's checks, as data: 3-5 questions at the end of its lesson.

Two kinds. A *run check* is answered from a run the learner made: the page names the
playground to run and where to read the number; grading reads that run's stored result
(``Run.result``, the JSON its handler in workers/handlers/ returned) and compares with a
tolerance. A *choice check* is conceptual multiple choice.

Plain Python, no Django, no torch: the pages, the services and the tests all read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]


@dataclass(frozen=True)
class Check:
    """One question. ``playground`` set: a run check; ``options`` set: multiple choice."""

    id: str
    chapter: str
    question: str
    explanation: str  # why the answer is what it is, shown after grading either way
    options: tuple[str, ...] = ()
    answer: int = 0  # index into ``options``
    playground: str = ""  # slug of the playground whose run answers it
    how: str = ""  # which run to make, and where its page shows the number
    measure: Callable[[Result], float | None] | None = None  # None: this run cannot answer
    unit: str = ""  # printed after numbers: "×", " queries/s"
    digits: int = 2  # decimals when a measured value is shown
    tolerance: float = 0.0  # absolute: |answer − measured| ≤ tolerance is right
    relative: float = 0.0  # or relative: ≤ relative × |measured|

    @property
    def from_run(self) -> bool:
        return bool(self.playground)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    message: str  # one sentence or two a learner reads: what was measured, what they said


class BadAnswer(ValueError):
    """An answer that cannot be graded (not a number, no option): nothing is stored."""


# ------------------------------------------------------------------ reading results


def first_ef_at_recall(target: float) -> Callable[[Result], float | None]:
    """The smallest ef_search at which our HNSW reached ``target`` recall in an index-lab
    run (its ``indexes[*].points``, swept in increasing order); None if it never did."""

    def measure(result: Result) -> float | None:
        for index in result.get("indexes", []):
            if index.get("index") != "hnsw":
                continue
            for point in index.get("points", []):
                if point.get("recall", 0) >= target:
                    return float(point["value"])
        return None

    return measure


def at(*path: str | int) -> Callable[[Result], float | None]:
    """A number at ``path`` in the result (keys and list positions); None if absent."""

    def measure(result: Result) -> float | None:
        node: Any = result
        for step in path:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                return None
        return float(node) if isinstance(node, int | float) else None

    return measure


def count_of(key: str) -> Callable[[Result], float | None]:
    """How many items the result's list ``key`` holds."""
    return lambda result: float(len(result[key])) if isinstance(result.get(key), list) else None


# ------------------------------------------------------------------ the checks

CHECKS: tuple[Check, ...] = (
    # 1. Vector embeddings
    Check(
        id="embeddings-jaccard",
        chapter="embeddings",
        playground="hash-vectors",
        question="What exact Jaccard similarity did your run measure between the two texts' "
        "word n-grams?",
        how="Run the hash vectors playground (any two texts); read the 'exact' row of its table.",
        measure=at("exact_jaccard"),
        digits=3,
        tolerance=0.01,
        explanation="Jaccard is shared n-grams over all distinct n-grams of the two texts; "
        "the Bloom and MinHash rows are estimates of this one number.",
    ),
    Check(
        id="embeddings-shared-grams",
        chapter="embeddings",
        playground="hash-vectors",
        question="How many word n-grams do your two texts share?",
        how="Run the hash vectors playground; the line above its table says how many they share.",
        measure=at("grams_shared"),
        digits=0,
        explanation="That count is the numerator of the exact Jaccard similarity.",
    ),
    Check(
        id="embeddings-cosine-dot",
        chapter="embeddings",
        question="Two embedding models give unit-length vectors. Ranking neighbours by cosine "
        "similarity and by dot product gives…",
        options=("the same order", "opposite orders", "unrelated orders"),
        answer=0,
        explanation="For unit vectors cos(a, b) = a·b / (|a||b|) = a·b: the two are the same "
        "number, so they rank alike (and Euclidean distance ranks alike too).",
    ),
    Check(
        id="embeddings-minhash-error",
        chapter="embeddings",
        question="With four times as many MinHash permutations, the typical error of the "
        "Jaccard estimate…",
        options=("halves", "quarters", "stays the same"),
        answer=0,
        explanation="Each slot is an independent yes/no draw, so the standard error is "
        "√(J(1−J)/P): four times P halves it.",
    ),
    # 2. Vector databases and search
    Check(
        id="vector-search-hnsw-ef",
        chapter="vector-search",
        playground="index-lab",
        question="At what ef_search did your HNSW (ours) first reach recall 0.95?",
        how="Run the index lab with HNSW (ours) among the indexes; hover its curve's points "
        "(each is labelled ef_search=…) and take the first at recall ≥ 0.95.",
        measure=first_ef_at_recall(0.95),
        digits=0,
        explanation="ef_search is how many candidates the graph search keeps: more finds "
        "more true neighbours, at fewer queries a second.",
    ),
    Check(
        id="vector-search-exact-qps",
        chapter="vector-search",
        playground="index-lab",
        question="How many queries a second did exact (brute-force) search answer in your run?",
        how="Run the index lab; the line above its chart gives exact search's queries/s.",
        measure=at("exact_qps"),
        digits=0,
        unit=" queries/s",
        relative=0.05,
        explanation="Exact search compares each query with every vector: every index is "
        "measured against this speed and its recall of 1.",
    ),
    Check(
        id="vector-search-nprobe",
        chapter="vector-search",
        question="Raising an IVF index's nprobe…",
        options=(
            "raises recall and lowers queries per second",
            "raises both recall and queries per second",
            "changes only the memory the index takes",
        ),
        answer=0,
        explanation="nprobe is how many clusters a query visits: more clusters hold more of "
        "the true neighbours, and cost more distance computations.",
    ),
    Check(
        id="vector-search-pq-bytes",
        chapter="vector-search",
        question="Product quantization with 8 sub-vectors of 8 bits each stores a "
        "384-dimensional float32 vector in how many bytes?",
        options=("8", "48", "1,536"),
        answer=0,
        explanation="Each sub-vector becomes one byte (the id of its nearest centroid): 8 "
        "bytes instead of 384 × 4 = 1,536.",
    ),
    # 3. Tokenization
    Check(
        id="tokenization-merges",
        chapter="tokenization",
        playground="bpe-step",
        question="How many merges did your step-through run learn?",
        how="Run 'step through BPE'; the stepper counts the merges (it stops early once no "
        "pair occurs twice).",
        measure=count_of("steps"),
        digits=0,
        explanation="Each merge adds one token to the vocabulary; training stops at the "
        "vocabulary size asked for, or when no pair is worth merging.",
    ),
    Check(
        id="tokenization-first-count",
        chapter="tokenization",
        playground="bpe-step",
        question="How many times did the first pair your run merged occur in its corpus?",
        how="Run 'step through BPE'; the first merge shows its pair and count.",
        measure=at("steps", 0, "count"),
        digits=0,
        explanation="BPE always merges the most frequent adjacent pair first: that count is "
        "the largest in the first step's table.",
    ),
    Check(
        id="tokenization-no-unk",
        chapter="tokenization",
        question="Why can a byte-level BPE tokenizer encode any text without an unknown token?",
        options=(
            "its base vocabulary holds all 256 bytes",
            "it is trained on every language",
            "it falls back to whole words",
        ),
        answer=0,
        explanation="Any text is a sequence of bytes, and every byte is a token before any "
        "merge is learned.",
    ),
    # 4. Transformers
    Check(
        id="transformers-position-similarity",
        chapter="transformers",
        playground="positions",
        question="What cosine similarity did your run find between the encodings of "
        "positions 0 and 1?",
        how="Run the positional encodings playground; hover row 0, column 1 of the "
        "similarity heatmap.",
        measure=at("similarity", 0, 1),
        digits=3,
        tolerance=0.01,
        explanation="Neighbouring positions have similar sinusoidal encodings; the "
        "similarity falls with distance, which is what lets attention learn offsets.",
    ),
    Check(
        id="transformers-temperature",
        chapter="transformers",
        question="Dividing the logits by a temperature T = 2 before the softmax makes the "
        "next-token distribution…",
        options=("flatter", "sharper", "unchanged"),
        answer=0,
        explanation="softmax(z/T) with T > 1 shrinks the gaps between logits, so "
        "probabilities move toward uniform; T < 1 sharpens them.",
    ),
    Check(
        id="transformers-causal",
        chapter="transformers",
        question="Under a causal mask, the token at position 5 attends to…",
        options=("positions 0-5", "positions 5 onwards", "every position"),
        answer=0,
        explanation="A causal mask hides the future: a token sees itself and what came "
        "before, which is what lets a model be trained to predict the next token.",
    ),
    # 5. Inference optimisation
    Check(
        id="inference-kv-speedup",
        chapter="inference",
        playground="kv-cache",
        question="What speed-up did the KV cache give you over recomputing everything?",
        how="Run 'KV cache on and off' (64 new tokens by default); its result states the speed-up.",
        measure=at("speedup"),
        digits=2,
        unit="×",
        relative=0.05,
        explanation="With the cache each new token attends over stored keys and values; "
        "without it the whole prefix is recomputed, so the gap grows with length.",
    ),
    Check(
        id="inference-kv-memory",
        chapter="inference",
        question="The KV cache of one sequence grows with its length…",
        options=("linearly", "quadratically", "not at all"),
        answer=0,
        explanation="Each position adds one key and one value per layer and head: the same "
        "number of bytes per position.",
    ),
    Check(
        id="inference-speculative",
        chapter="inference",
        question="With greedy decoding, speculative decoding's output compared with plain "
        "decoding's is…",
        options=("identical", "usually close", "shorter"),
        answer=0,
        explanation="The big model checks every drafted token and keeps only those it would "
        "have picked itself: fewer forward passes, the same tokens.",
    ),
    # 6. RAG, agents and semantic caching
    Check(
        id="rag-cache-threshold",
        chapter="rag-agents",
        question="Lowering a semantic cache's similarity threshold…",
        options=(
            "serves more hits, some of them answers to different questions",
            "serves fewer hits, each of them exact",
            "changes only how long entries are kept",
        ),
        answer=0,
        explanation="A lower threshold accepts less similar questions as the same: more "
        "hits, and more of them wrong.",
    ),
    Check(
        id="rag-rrf",
        chapter="rag-agents",
        question="Reciprocal rank fusion combines a keyword and a vector retriever by…",
        options=(
            "the ranks each gives a chunk",
            "adding their raw scores",
            "keeping the vector retriever's list only",
        ),
        answer=0,
        explanation="BM25 and cosine scores live on different scales; ranks do not, so "
        "RRF adds 1/(k + rank) from each list.",
    ),
    Check(
        id="rag-overlap",
        chapter="rag-agents",
        question="Why do chunkers often let neighbouring chunks overlap?",
        options=(
            "so a sentence cut at a boundary is whole in at least one chunk",
            "to make the index smaller",
            "so the model reads each passage twice",
        ),
        answer=0,
        explanation="A fact split across two chunks matches neither well; an overlap keeps "
        "it whole in one of them, at the cost of a few more chunks.",
    ),
)

BY_ID: dict[str, Check] = {check.id: check for check in CHECKS}


def for_chapter(chapter: str) -> list[Check]:
    return [check for check in CHECKS if check.chapter == chapter]


# ------------------------------------------------------------------ grading

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def parse_number(text: str) -> float:
    """A learner's number: '2.3', '2,3', '2.3×', '1,024', '95 %' (→ 95). BadAnswer if none."""
    cleaned = re.sub(r"[\s×x%_]|queries/s|qps", "", text.strip().lower())
    cleaned = cleaned.replace(",", "") if _THOUSANDS.match(cleaned) else cleaned.replace(",", ".")
    try:
        value = float(cleaned)
    except ValueError:
        raise BadAnswer(f"'{text}' is not a number: type the number only, e.g. 2.31.") from None
    if not math.isfinite(value):
        raise BadAnswer("Type a finite number, e.g. 2.31.")
    return value


def shown(check: Check, value: float) -> str:
    return f"{value:,.{check.digits}f}{check.unit}"


def grade_choice(check: Check, answer: str) -> Verdict:
    try:
        picked = int(answer)
        option = check.options[picked]
    except (ValueError, IndexError):
        raise BadAnswer("Pick one of the answers.") from None
    if picked == check.answer:
        return Verdict(True, f"“{option}” — right. {check.explanation}")
    return Verdict(
        False, f"Not “{option}”: it is “{check.options[check.answer]}”. {check.explanation}"
    )


def grade_run(check: Check, answer: str, result: Result | None) -> Verdict:
    """Compare a learner's number with what their run measured (``result``: Run.result)."""
    assert check.measure is not None
    given = parse_number(answer)
    measured = check.measure(result or {})
    if measured is None:
        return Verdict(False, f"Your run has no answer to this: {check.how}")
    allowed = max(check.tolerance, check.relative * abs(measured))
    said = f"Your run measured {shown(check, measured)}; you answered {answer.strip()}"
    if abs(given - measured) <= allowed + 1e-12:
        return Verdict(True, f"{said} — right. {check.explanation}")
    margin = f"within {shown(check, allowed)}" if allowed else "exactly"
    return Verdict(
        False, f"{said} — not quite: it counts as right {margin} of the measured value. "
        f"{check.explanation}",
    )  # fmt: skip
