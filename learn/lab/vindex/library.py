"""The production libraries behind the same ``Index`` protocol: FAISS and hnswlib.

Both are imported only when an index is built, so importing this module is free and the
rest of the package works without them. The wrappers add nothing to the search path but
parameter setting and wrapping the arrays as :class:`Hits`, so their speed is the
library's (``bench/vindex.py`` checks).

Same conventions as the from-scratch indexes: squared L2, or ``1 - cos`` for
``metric="cosine"`` (inputs normalised, L2 halved); FAISS's order ``(distances, ids)``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, get_args

import numpy as np

from learn.lab.events import Emit, no_emit
from learn.lab.facts import IndexName
from learn.lab.vindex.base import BaseIndex, Hits, check_k, check_metric, prepare, require_built

# "flat", "hnsw", ...: the FAISS index names of learn.lab.facts, less their "faiss_"
FAISS_KINDS = tuple(n.removeprefix("faiss_") for n in get_args(IndexName) if n.startswith("faiss_"))


def available(module: str) -> bool:
    """True if ``module`` ("faiss", "hnswlib") can be imported."""
    return importlib.util.find_spec(module) is not None


def _faiss() -> Any:
    try:
        return importlib.import_module("faiss")
    except ImportError as exc:
        raise ModuleNotFoundError("FAISS is not installed: `pip install faiss-cpu`") from exc


class FaissIndex(BaseIndex):
    """One FAISS index type, chosen by ``kind``:

    - ``"flat"``: ``IndexFlatL2``, exact;
    - ``"hnsw"``: ``IndexHNSWFlat(d, M)``, build ``ef_construction``, search ``ef_search``;
    - ``"ivf_flat"``: ``IndexIVFFlat`` with ``nlist`` cells, search ``nprobe``;
    - ``"ivf_pq"``: ``IndexIVFPQ`` with ``nlist`` cells and ``m`` × ``nbits`` codes, ``nprobe``;
    - ``"sq8"``: ``IndexScalarQuantizer`` with ``QT_8bit``.

    ``threads`` sets FAISS's OpenMP thread count (process-wide) before build and search.
    """

    search_params = ("ef_search", "nprobe")

    def __init__(
        self,
        kind: str = "flat",
        metric: str = "l2",
        *,
        M: int = 16,
        ef_construction: int = 100,
        ef_search: int = 50,
        nlist: int = 100,
        nprobe: int = 1,
        m: int = 8,
        nbits: int = 8,
        seed: int = 1234,
        threads: int | None = None,
    ) -> None:
        if kind not in FAISS_KINDS:
            raise ValueError(f"kind must be one of {FAISS_KINDS}, got {kind!r}")
        self.kind, self.name = kind, f"faiss_{kind}"
        self.metric = check_metric(metric)
        self.M, self.ef_construction, self.ef_search = M, ef_construction, ef_search
        self.nlist, self.nprobe, self.m, self.nbits = nlist, nprobe, m, nbits
        self.seed, self.threads = seed, threads
        self.index: Any = None

    def make(self, d: int) -> Any:
        """The empty FAISS index for dimension ``d``."""
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexFlatL2(d)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.M)
            index.hnsw.efConstruction = self.ef_construction
            return index
        if self.kind == "sq8":
            return faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit)
        coarse = faiss.IndexFlatL2(d)
        if self.kind == "ivf_flat":
            index = faiss.IndexIVFFlat(coarse, d, self.nlist)
        else:
            index = faiss.IndexIVFPQ(coarse, d, self.nlist, self.m, self.nbits)
        index.cp.seed = self.seed  # k-means seed (FAISS's wrapper keeps `coarse` alive)
        return index

    def _threads(self) -> None:
        if self.threads is not None:
            _faiss().omp_set_num_threads(int(self.threads))

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        self._threads()
        self.index = self.make(self.d)
        if not self.index.is_trained:
            emit("progress", pct=10.0, message=f"{self.name}: training")
            self.index.train(x)
        self.index.add(x)
        return f"added {self.n} vectors"

    def _search(
        self, qs: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``ef_search`` applies to ``hnsw``, ``nprobe`` to the IVF kinds."""
        self._threads()
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = int(self.ef_search if ef_search is None else ef_search)
        elif self.kind in ("ivf_flat", "ivf_pq"):
            self.index.nprobe = int(self.nprobe if nprobe is None else nprobe)
        return self.index.search(qs, k)  # float32 (q, k), int64 (q, k)

    @property
    def nbytes(self) -> int:
        """Size of the serialized index: what FAISS would write to disk."""
        if self.index is None:
            return 0
        return int(_faiss().serialize_index(self.index).nbytes)


class HnswlibIndex:
    """hnswlib's HNSW (the reference implementation by the paper's authors).

    Not a :class:`BaseIndex`: hnswlib's own "cosine" space normalises and reports
    ``1 - cos``, so this wrapper passes the metric on instead of normalising and halving.
    """

    name = "hnswlib"

    def __init__(
        self,
        M: int = 16,
        ef_construction: int = 100,
        metric: str = "l2",
        *,
        ef_search: int = 50,
        seed: int = 100,
        threads: int = 1,
    ) -> None:
        self.M, self.ef_construction, self.ef_search = M, ef_construction, ef_search
        self.metric = check_metric(metric)
        self.seed, self.threads = seed, threads
        self.index: Any = None
        self.d = 0
        self.n = 0

    def build(self, x: np.ndarray, *, emit: Emit = no_emit) -> None:
        try:
            hnswlib = importlib.import_module("hnswlib")
        except ImportError as exc:
            raise ModuleNotFoundError("hnswlib is not installed: `pip install hnswlib`") from exc
        x = prepare(x, "l2")  # hnswlib's "cosine" space normalises by itself
        self.n, self.d = x.shape
        self.index = hnswlib.Index(space=self.metric, dim=self.d)
        self.index.init_index(
            max_elements=self.n,
            M=self.M,
            ef_construction=self.ef_construction,
            random_seed=self.seed,
        )
        self.index.add_items(x, np.arange(self.n), num_threads=self.threads)
        emit("progress", pct=100.0, message=f"hnswlib: inserted {self.n} vectors")

    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None) -> Hits:
        """``ef_search`` is raised to ``k`` if smaller, as hnswlib requires."""
        require_built(self, self.index is not None)
        k = check_k(k)
        qs = prepare(queries, "l2", self.d, "queries")
        self.index.set_ef(max(int(self.ef_search if ef_search is None else ef_search), k))
        labels, distances = self.index.knn_query(qs, k=k, num_threads=self.threads)
        # labels are uint64 row numbers < 2**63: reinterpret as int64 without a copy
        return Hits(distances, labels.view(np.int64))

    @property
    def nbytes(self) -> int:
        return 0 if self.index is None else int(self.index.index_file_size())

    @property
    def bytes_per_vector(self) -> float:
        return self.nbytes / max(self.n, 1)
