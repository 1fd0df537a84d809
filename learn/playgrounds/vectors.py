"""Chapter 2, vector databases and search: the index lab, a query's trace, compression,
pgvector.

Every bound here is enforced before a job is queued: sizes, counts, index parameters, and
an estimate of the memory each index needs (``learn.lab.vindex.memory``, no torch).
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, model_validator

from learn.lab.facts import (
    DEFAULT_INDEXES,
    HNSW_KINDS,
    IVF_KINDS,
    PQ_KINDS,
    SCRATCH_LIMITS,
    SEEDED_KINDS,
    IndexName,
)
from learn.playgrounds.base import Playground, PlaygroundParams, Seed, register

MEMORY_LIMIT = 2 * 1024**3  # bytes one index build may need, queries and ground truth included
MAX_TEXT_LINES = 5_000


class VectorData(PlaygroundParams):
    """Which vectors: seeded clustered Gaussians, scikit-learn's digits, or your texts."""

    dataset: Literal["clustered", "digits", "texts"] = "clustered"
    n: int = Field(default=10_000, ge=100, le=200_000, description="vectors (clustered)")
    d: int = Field(default=64, ge=2, le=1_024, description="dimensions (clustered)")
    clusters: int = Field(default=20, ge=1, le=1_000)
    seed: Seed = 0
    queries: int = Field(default=200, ge=10, le=1_000, description="held-out query vectors")
    texts: str | None = Field(
        default=None,
        max_length=1_000_000,
        description="dataset=texts: one text per line (50-5,000 lines), embedded with MiniLM",
    )
    metric: Literal["l2", "cosine"] = "l2"

    @model_validator(mode="after")
    def dataset_fits(self) -> VectorData:
        if self.dataset == "texts":
            lines = [line for line in (self.texts or "").splitlines() if line.strip()]
            if not 50 <= len(lines) <= MAX_TEXT_LINES:
                raise ValueError(
                    f"dataset=texts needs 50 to {MAX_TEXT_LINES:,} non-empty lines "
                    f"(one text per line); got {len(lines)}"
                )
            if self.queries >= len(lines) // 2:
                raise ValueError("queries must be fewer than half the texts")
        elif self.texts:
            raise ValueError("texts are only read when dataset=texts")
        return self

    def shape(self) -> tuple[int, int]:
        """(n, d) of the vectors that will be indexed."""
        if self.dataset == "digits":
            return 1_700, 64
        if self.dataset == "texts":
            lines = [line for line in (self.texts or "").splitlines() if line.strip()]
            return len(lines) - self.queries, 384
        return self.n, self.d

    def stored(self) -> dict[str, Any]:
        params = self.model_dump(exclude={"texts"})
        if self.texts is not None:
            params["texts"] = self.texts  # kept: a run must be re-runnable (≤ 1 MB)
        return params


class IndexParams(VectorData):
    """Index parameters shared by the index lab, the trace and pgvector."""

    k: int = Field(default=10, ge=1, le=100, description="neighbours per query")
    M: int = Field(default=16, ge=4, le=64, description="HNSW links per node")
    ef_construction: int = Field(default=100, ge=8, le=512, description="HNSW build beam")
    nlist: int = Field(default=64, ge=1, le=4_096, description="IVF cells")
    pq_m: int = Field(default=8, ge=1, le=256, description="PQ sub-vectors (bytes per vector)")
    nbits: int = Field(default=8, ge=4, le=8, multiple_of=4, description="PQ code bits: 4 or 8")

    def index_params(self, name: str) -> dict[str, Any]:
        """The constructor parameters of index ``name`` from this form."""
        params: dict[str, Any] = {}
        if name in HNSW_KINDS:
            params |= {"M": self.M, "ef_construction": self.ef_construction}
        if name in IVF_KINDS:
            params["nlist"] = self.nlist
        if name in PQ_KINDS:
            params |= {"m": self.pq_m, "nbits": self.nbits}
        if name in SEEDED_KINDS:
            params["seed"] = self.seed
        return params

    def check_index(self, name: str) -> None:
        from learn.lab.vindex.memory import MemoryLimitExceeded, check_memory

        n, d = self.shape()
        if n < self.k:
            raise ValueError(f"k={self.k} is more than the {n} vectors")
        limit = SCRATCH_LIMITS.get(name)
        if limit and n > limit:
            raise ValueError(
                f"our from-scratch {name} is a teaching implementation: at most {limit:,} "
                f"vectors (you asked for {n:,}); the FAISS/hnswlib versions take more"
            )
        if name in IVF_KINDS and self.nlist > n // 4:
            raise ValueError(f"nlist={self.nlist} is too many cells for {n} vectors (≤ n/4)")
        if name in PQ_KINDS and d % self.pq_m:
            raise ValueError(f"pq_m={self.pq_m} must divide the dimension d={d}")
        try:
            check_memory(n, d, name, MEMORY_LIMIT, queries=self.queries, **self.index_params(name))
        except MemoryLimitExceeded as exc:
            raise ValueError(str(exc)) from exc


class IndexLabParams(IndexParams):
    indexes: list[IndexName] = Field(
        default=list(DEFAULT_INDEXES),
        min_length=1,
        max_length=8,
        description="1-8 indexes to build and compare",
    )

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["indexes"] = form.getlist("indexes")
        return {key: value for key, value in data.items() if value not in ("", None)}

    @model_validator(mode="after")
    def indexes_fit(self) -> IndexLabParams:
        if len(set(self.indexes)) != len(self.indexes):
            raise ValueError("each index once, please")
        for name in self.indexes:
            self.check_index(name)
        return self


class QueryTraceParams(IndexParams):
    index: Literal["hnsw", "ivf_flat"] = "hnsw"
    n: int = Field(default=3_000, ge=100, le=20_000, description="vectors (clustered)")
    d: int = Field(default=16, ge=2, le=256, description="dimensions (clustered)")
    query: int = Field(default=0, ge=0, le=999, description="which held-out query to trace")
    ef_search: int = Field(default=16, ge=1, le=512)
    nprobe: int = Field(default=2, ge=1, le=4_096)

    @model_validator(mode="after")
    def trace_fits(self) -> QueryTraceParams:
        self.check_index(self.index)
        if self.query >= self.queries:
            raise ValueError(f"query must be below queries={self.queries}")
        if self.index == "ivf_flat" and self.nprobe > self.nlist:
            raise ValueError(f"nprobe={self.nprobe} is more than nlist={self.nlist} cells")
        return self


class CompressionParams(VectorData):
    k: int = Field(default=10, ge=1, le=100)
    threshold: float = Field(
        default=0.3, gt=0, le=2, description="cosine distance for the threshold search"
    )

    @model_validator(mode="after")
    def fits(self) -> CompressionParams:
        from learn.lab.vindex.memory import check_memory

        n, d = self.shape()
        try:
            check_memory(n, d, "pq", MEMORY_LIMIT, queries=self.queries, m=max(1, d // 2))
        except ValueError as exc:
            raise ValueError(str(exc)) from exc
        if n > 100_000:
            raise ValueError("compression compares eight codecs: at most 100,000 vectors")
        return self


class PgvectorParams(IndexParams):
    n: int = Field(default=5_000, ge=100, le=50_000, description="rows in the table")
    d: int = Field(default=64, ge=2, le=1_024)
    index: Literal["hnsw", "ivfflat"] = "hnsw"
    ef_search: int = Field(default=40, ge=1, le=1_000)
    probes: int = Field(default=4, ge=1, le=4_096)
    categories: int = Field(default=10, ge=2, le=100, description="metadata values")
    category: int = Field(default=0, ge=0, le=99, description="the filter: category = this")

    @model_validator(mode="after")
    def fits(self) -> PgvectorParams:
        n, _ = self.shape()
        if self.category >= self.categories:
            raise ValueError(f"category must be below categories={self.categories}")
        if self.index == "ivfflat" and self.nlist > n // 4:
            raise ValueError(f"nlist={self.nlist} is too many lists for {n} rows (≤ n/4)")
        if self.queries > 200:
            raise ValueError("pgvector runs each query as SQL: at most 200 queries")
        return self


HANDLERS = "workers.handlers.vectors"

register(
    Playground(
        slug="index-lab",
        title="Index lab",
        chapter="vector-search",
        summary="Build exact, K-D tree, HNSW, IVF, PQ and SQ indexes (ours and FAISS/hnswlib) "
        "on the same vectors: build time, bytes per vector, recall@k and queries/s, drawn "
        "as each point is measured.",
        params=IndexLabParams,
        handler=f"{HANDLERS}:index_lab",
        queue="gpu",
        time_limit=900,
        live=True,
    ),
    Playground(
        slug="query-trace",
        title="Trace a query",
        chapter="vector-search",
        summary="One query through our HNSW (hops per layer) or IVF (cells probed), drawn "
        "on a 2-D projection with its true neighbours.",
        params=QueryTraceParams,
        handler=f"{HANDLERS}:query_trace",
        time_limit=300,
    ),
    Playground(
        slug="compression",
        title="Compress the vectors",
        chapter="vector-search",
        summary="PCA, product and scalar quantization on the same vectors: bytes per "
        "vector against recall@k, beside a plain cosine-threshold search.",
        params=CompressionParams,
        handler=f"{HANDLERS}:compression",
        queue="gpu",
        time_limit=600,
    ),
    Playground(
        slug="pgvector",
        title="pgvector",
        chapter="vector-search",
        summary="The vectors in a real PostgreSQL table with an HNSW or IVFFlat index: "
        "recall, EXPLAIN ANALYZE, and a metadata filter before vs after the search.",
        params=PgvectorParams,
        handler=f"{HANDLERS}:pgvector",
        time_limit=600,
    ),
)
