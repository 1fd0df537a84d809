"""Chapter 6, RAG, agents and semantic caching: make a collection, ask the course,
evaluate retrieval, a semantic cache, and planning by search (MCTS)."""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, field_validator, model_validator

from learn.documents import MAX_DOCUMENT_BYTES, UnreadableDocument, check_text, read_document
from learn.playgrounds.base import (
    FormProblem,
    LargeTextParams,
    Playground,
    PlaygroundParams,
    Seed,
    register,
)

COURSE = "course"  # the built-in collection: this site's own six lessons
CHUNKERS = ("fixed", "recursive", "sentence")
RETRIEVERS = ("dense", "bm25", "hybrid")
Chunker = Literal["fixed", "recursive", "sentence"]
Retriever = Literal["dense", "bm25", "hybrid"]
MAX_QUESTION_TOKENS = 96  # MiniLM word pieces; a question, not a document
MAX_OWN_QUESTIONS = 200


@cache
def _minilm() -> Any:
    """MiniLM's WordPiece (HF ``tokenizers``: Rust, no torch, fine in the web process)."""
    from learn.lab.models import minilm_tokenizer_file
    from learn.lab.tokenize import hf_tokenizer

    return hf_tokenizer(minilm_tokenizer_file(), "MiniLM", "WordPiece")


def question_tokens(text: str) -> int:
    """MiniLM word pieces in ``text`` (what the embedding model reads of it)."""
    return len(_minilm().pieces(text))


class CollectionChoice(PlaygroundParams):
    collection: str = Field(
        default=COURSE, description="'course' (the lessons) or the id of a collection of yours"
    )

    @field_validator("collection")
    @classmethod
    def collection_id(cls, value: str) -> str:
        value = value.strip()
        if value != COURSE:
            try:
                value = str(uuid.UUID(value))
            except ValueError as exc:
                raise ValueError(
                    "collection must be 'course' or the id of a collection you made"
                ) from exc
        return value

    def collections(self) -> list[str]:
        return [] if self.collection == COURSE else [self.collection]


class Question(CollectionChoice):
    question: str = Field(min_length=1, max_length=1_000, description="your question")

    @field_validator("question")
    @classmethod
    def short_enough(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("ask a question: it is empty")
        n = question_tokens(value)
        if n > MAX_QUESTION_TOKENS:
            raise ValueError(
                f"the question is {n} tokens; ask in at most {MAX_QUESTION_TOKENS} "
                "(a sentence or two)"
            )
        return value


class CollectionParams(LargeTextParams):
    """A collection of your own: pasted text or an uploaded .txt, .md or .pdf (≤ 5 MB)."""

    name: str = Field(min_length=1, max_length=100, description="a name to find it by")
    text: str = Field(min_length=1, description="the document's text (at most 5 MB)")
    source: str = Field(default="pasted", max_length=255, description="file name, or 'pasted'")
    redact_pii: bool = Field(
        default=True,
        description="replace emails, phone numbers, card numbers and IBANs before indexing",
    )

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data: dict[str, Any] = {"name": (form.get("name") or "").strip() or "My collection"}
        data["redact_pii"] = form.get("redact_pii") == "on"  # a checkbox, ticked by default
        upload = files.get("document")
        if upload is not None and upload.size:
            if upload.size > MAX_DOCUMENT_BYTES:
                raise FormProblem("document", "The file is larger than 5 MB; upload less text.")
            try:
                data["text"] = read_document(upload.name, upload.read())
            except UnreadableDocument as exc:
                raise FormProblem("document", str(exc)) from exc
            data["source"] = upload.name[:255]
        else:
            data["text"] = form.get("text") or ""
        return data

    @field_validator("text")
    @classmethod
    def readable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the text is empty: paste or upload a document")
        if len(value.encode("utf-8")) > MAX_DOCUMENT_BYTES:
            raise ValueError("the text is larger than 5 MB; a collection takes at most that")
        try:
            check_text(value)
        except UnreadableDocument as exc:
            raise ValueError(str(exc)) from exc
        return value

    def source_name(self) -> str:
        return self.source

    @model_validator(mode="after")
    def without_pii(self) -> CollectionParams:
        """Redact here, before the text is stored anywhere (the run's corpus included)."""
        if self.redact_pii:
            from learn.lab.pii import redact

            self.text = redact(self.text).text
        return self


class AskParams(Question):
    chunker: Chunker = Field(default="recursive", description="how the documents were cut")
    k: int = Field(default=5, ge=1, le=10, description="chunks given to the model")
    rerank: Literal["none", "mmr", "llm"] = Field(
        default="none", description="re-rank the fused list: MMR, or SmolLM2 judging relevance"
    )
    context_budget: int = Field(
        default=768, ge=128, le=1_536, description="SmolLM2 tokens for instructions + chunks"
    )
    max_new_tokens: int = Field(default=128, ge=8, le=256)
    closed_book: bool = Field(default=True, description="also answer with no retrieval")


class EvalParams(CollectionChoice):
    chunkers: list[Chunker] = Field(default=list(CHUNKERS), min_length=1, max_length=3)
    retrievers: list[Retriever] = Field(default=list(RETRIEVERS), min_length=1, max_length=3)
    questions: str | None = Field(
        default=None,
        max_length=100_000,
        description="your own pairs, one per line: question | a passage of the answer, "
        "quoted from your collection (the built-in set is used for the course)",
    )

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["chunkers"] = form.getlist("chunkers")
        data["retrievers"] = form.getlist("retrievers")
        if not (data.get("questions") or "").strip():
            data.pop("questions", None)
        return data

    def pairs(self) -> list[tuple[str, str]]:
        """The learner's (question, quoted answer) pairs."""
        lines = [line for line in (self.questions or "").splitlines() if line.strip()]
        return [tuple(part.strip() for part in line.split("|", 1)) for line in lines]  # type: ignore[misc]

    @model_validator(mode="after")
    def pairs_fit(self) -> EvalParams:
        if self.collection != COURSE and not self.questions:
            raise ValueError(
                "your collection has no built-in questions: add lines 'question | quoted answer'"
            )
        lines = [line for line in (self.questions or "").splitlines() if line.strip()]
        if len(lines) > MAX_OWN_QUESTIONS:
            raise ValueError(f"at most {MAX_OWN_QUESTIONS} questions, you gave {len(lines)}")
        for number, line in enumerate(lines, 1):
            question, bar, answer = line.partition("|")
            if not bar or not question.strip() or len(answer.strip()) < 3:
                raise ValueError(
                    f"line {number} should read 'question | a quoted passage of the answer'"
                )
        if len(set(self.chunkers)) != len(self.chunkers) or len(set(self.retrievers)) != len(
            self.retrievers
        ):
            raise ValueError("each chunker and retriever once, please")
        return self


class CacheParams(Question):
    threshold: float | None = Field(
        default=None,
        ge=0.5,
        le=0.999,
        description="cosine similarity that counts as the same; empty: the threshold the "
        "labelled pairs suggest",
    )
    verify: bool = Field(
        default=True,
        description="a hit must also pass the word-level check (numbers, negation, roles, "
        "a replaced term)",
    )
    ttl_seconds: int = Field(default=3_600, ge=10, le=86_400, description="how long answers live")
    max_new_tokens: int = Field(default=96, ge=8, le=256)

    @field_validator("threshold", mode="before")
    @classmethod
    def blank_is_suggested(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


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


HANDLERS = "workers.handlers.rag"

register(
    Playground(
        slug="rag-collection",
        title="Make a collection",
        chapter="rag-agents",
        summary="Your own documents (paste, or upload .txt, .md or .pdf up to 5 MB), cut by "
        "each chunker, embedded with MiniLM and stored in pgvector, for the playgrounds below.",
        params=CollectionParams,
        handler=f"{HANDLERS}:make_collection",
        queue="gpu",
        time_limit=600,
        uploads=True,
    ),
    Playground(
        slug="rag-ask",
        title="Ask the course",
        chapter="rag-agents",
        summary="Dense, BM25 and hybrid retrieval side by side, optional re-ranking, the "
        "assembled prompt, and SmolLM2's answer with citations beside its answer without them.",
        params=AskParams,
        handler=f"{HANDLERS}:ask",
        queue="gpu",
        time_limit=600,
        live=True,
    ),
    Playground(
        slug="rag-eval",
        title="Retrieval evaluation",
        chapter="rag-agents",
        summary="Every chunker × retriever on a set of questions with known answers: "
        "recall@1, recall@5 and MRR, and the questions each one missed.",
        params=EvalParams,
        handler=f"{HANDLERS}:evaluate",
        queue="gpu",
        time_limit=600,
        live=True,
    ),
    Playground(
        slug="semantic-cache",
        title="Semantic cache",
        chapter="rag-agents",
        summary="Ask, miss, generate; ask a paraphrase, hit. Precision, recall and hit rate "
        "as the similarity threshold moves, with and without a word-level check of each hit, "
        "and the false hits listed.",
        params=CacheParams,
        handler=f"{HANDLERS}:semantic_cache",
        queue="gpu",
        time_limit=300,
    ),
    Playground(
        slug="mcts",
        title="Monte Carlo tree search",
        chapter="rag-agents",
        summary="Play noughts and crosses against MCTS and see how many simulations "
        "it spent on each move before choosing.",
        params=MCTSParams,
        handler=f"{HANDLERS}:mcts",
        time_limit=60,
    ),
)
