"""Our vector indexes against FAISS and hnswlib on the same clustered data.

    python bench/vindex.py [--n 10000] [--d 64] [--queries 1000] [--k 10] [--repeats 3]
                           [--sentences 5000]

Three comparisons, then the goals of issue 15 with met/missed:

1. wrapper overhead: each FAISS/hnswlib index is built once through our wrapper
   (``learn.lab.vindex.library``), then searched through the wrapper and by calling the
   library directly on the very same index object with the same parameters, so recall
   is identical and the QPS ratio is the cost of the wrapper alone (goal ≥ 0.9);
2. from scratch vs library: our HNSW against hnswlib (same M, ef_construction,
   ef_search) and our IVF-Flat / IVF-PQ against FAISS (same nlist, m, nbits, nprobe):
   recall@k of each, and the QPS and build-time ratios;
3. IVF-Flat recall on real sentence embeddings: ``--sentences`` docstring sentences of
   Python's standard library, embedded with MiniLM (384-d, unit length), nlist 100,
   nprobe 8, ours against FAISS (tests k-means quality: the cells decide the recall).

Goals: HNSW build ≥ 0.3× hnswlib (same M / ef_construction); HNSW search ≥ 0.5× hnswlib
at each ef_search (equal parameters, recall within 0.02); IVF-Flat search ≥ 0.7× and
IVF-PQ search ≥ 0.5× FAISS at each nprobe; IVF-Flat recall on sentences within 0.01.

Everything runs on one thread (numpy's BLAS, FAISS's OpenMP, hnswlib), so the ratios
compare implementations, not core counts. QPS is the best of ``--repeats`` interleaved
rounds (each ≥ 0.25 s) over all queries. Ends with ``RESULT <json>``.
"""

from __future__ import annotations

import os

# one thread everywhere, set before numpy and faiss start their thread pools
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import ast
import json
import random
import re
import sys
import sysconfig
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss
import numpy as np
import torch

from learn.lab.models import library_versions
from learn.lab.timing import best_of
from learn.lab.vindex import clustered, exact_knn, recall_at_k
from learn.lab.vindex.base import Hits
from learn.lab.vindex.lab import make_index


def best_qps(
    fns: list[Callable[[], object]], n_queries: int, repeats: int, min_round_s: float = 0.25
) -> list[float]:
    """Best queries/s of each function over ``repeats`` interleaved rounds.

    A round calls the function enough times to last about ``min_round_s`` (timed once
    beforehand), so fast searches are not measured from a single few-ms call.
    """
    calls = [max(1, round(min_round_s / max(best_of(fn, 1)[0], 1e-6))) for fn in fns]
    rounds = [lambda fn=fn, n=n: [fn() for _ in range(n)] for fn, n in zip(fns, calls, strict=True)]
    best = [float("inf")] * len(fns)
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits every function
        for i, one_round in enumerate(rounds):
            best[i] = min(best[i], best_of(one_round, 1)[0] / calls[i])
    return [n_queries / t for t in best]


def timed_build(index: Any, data: np.ndarray) -> float:
    return best_of(lambda: index.build(data), 1)[0]


def wrapper_rows(data, queries, truth, k, repeats) -> list[dict[str, Any]]:
    """Same index, same parameters: through our wrapper vs straight to the library."""
    cases = [
        ("faiss_flat", {}, None, [None]),
        ("faiss_sq8", {}, None, [None]),
        ("faiss_hnsw", {"M": 16, "ef_construction": 100}, "ef_search", [16, 64]),
        ("faiss_ivf_flat", {"nlist": 100}, "nprobe", [4, 16]),
        ("hnswlib", {"M": 16, "ef_construction": 100}, "ef_search", [16, 64]),
    ]
    rows = []
    for name, params, knob, values in cases:
        ours = make_index(name, threads=1, **params)
        ours.build(data)
        lib = ours.index  # the raw faiss.Index / hnswlib.Index the wrapper built
        for value in values:
            search = {} if knob is None else {knob: value}

            def wrapped(search: dict[str, Any] = search, ours: Any = ours) -> Hits:
                return ours.search(queries, k, **search)

            def direct(value: Any = value, lib: Any = lib, name: str = name) -> Any:
                if name == "hnswlib":
                    lib.set_ef(max(value, k))
                    return lib.knn_query(queries, k=k, num_threads=1)
                if name == "faiss_hnsw":
                    lib.hnsw.efSearch = value
                elif name == "faiss_ivf_flat":
                    lib.nprobe = value
                return lib.search(queries, k)

            hits = wrapped()
            raw = direct()
            raw_ids = raw[0] if name == "hnswlib" else raw[1]
            assert np.array_equal(hits.ids, raw_ids.astype(np.int64)), f"{name}: results differ"
            q_ours, q_lib = best_qps([wrapped, direct], len(queries), repeats)
            rows.append(
                {
                    "index": name,
                    "param": "-" if knob is None else f"{knob}={value}",
                    "recall": recall_at_k(hits.ids, truth.ids, k),
                    "direct_qps": q_lib,
                    "wrapper_qps": q_ours,
                    "ratio": q_ours / q_lib,
                }
            )
    return rows


def scratch_rows(data, queries, truth, k, repeats, with_pq) -> tuple[list[dict], list[dict]]:
    """Our from-scratch HNSW / IVF against the library at equal parameters."""
    pairs = [
        ("hnsw", "hnswlib", {"M": 16, "ef_construction": 100}, "ef_search", [16, 32, 64]),
        ("ivf_flat", "faiss_ivf_flat", {"nlist": 100}, "nprobe", [4, 8, 16]),
    ]
    if with_pq:
        m = data.shape[1] // 4  # 4-dim sub-vectors: m bytes per vector
        pairs.append(
            ("ivf_pq", "faiss_ivf_pq", {"nlist": 100, "m": m, "nbits": 8}, "nprobe", [4, 8, 16])
        )
    rows, builds = [], []
    for ours_name, lib_name, params, knob, values in pairs:
        ours = make_index(ours_name, **params)
        lib = make_index(lib_name, threads=1, **params)
        t_ours, t_lib = timed_build(ours, data), timed_build(lib, data)
        builds.append(
            {
                "ours": ours_name,
                "library": lib_name,
                "ours_s": t_ours,
                "library_s": t_lib,
                "ratio": t_lib / t_ours,
            }
        )
        for value in values:
            search = {knob: value}
            r_ours = recall_at_k(ours.search(queries, k, **search).ids, truth.ids, k)
            r_lib = recall_at_k(lib.search(queries, k, **search).ids, truth.ids, k)
            q_ours, q_lib = best_qps(
                [
                    lambda o=ours, s=search: o.search(queries, k, **s),
                    lambda li=lib, s=search: li.search(queries, k, **s),
                ],
                len(queries),
                repeats,
            )
            rows.append(
                {
                    "ours": ours_name,
                    "library": lib_name,
                    "param": f"{knob}={value}",
                    "ours_recall": r_ours,
                    "library_recall": r_lib,
                    "recall_diff": r_ours - r_lib,
                    "ours_qps": q_ours,
                    "library_qps": q_lib,
                    "qps_ratio": q_ours / q_lib,
                }
            )
    return rows, builds


def stdlib_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct English sentences (40-300 characters) from the docstrings of
    Python's standard library: real prose, the same on every machine with this Python."""
    found: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node) or ""
                for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 40 <= len(sent) <= 300 and sent[0].isupper():
                        found.add(sent)
    texts = sorted(found)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def sentence_row(n: int, k: int) -> dict[str, Any]:
    """IVF-Flat (nlist 100, nprobe 8) recall@k on MiniLM sentence embeddings, ours vs FAISS;
    the last 10 % of the sentences are the queries."""
    from learn.lab.embeddings import Encoder

    texts = stdlib_sentences(n)
    vecs = Encoder(device="cpu").encode(texts)  # (n, 384) float32, unit rows
    n_q = len(vecs) // 10
    data, queries = vecs[n_q:], vecs[:n_q]
    truth = exact_knn(data, queries, k, device="cpu")
    out: dict[str, Any] = {"sentences": len(texts), "queries": n_q}
    for name in ("ivf_flat", "faiss_ivf_flat"):
        extra = {"threads": 1} if name.startswith("faiss") else {}
        index = make_index(name, nlist=100, **extra)
        index.build(data)
        out[name] = recall_at_k(index.search(queries, k, nprobe=8).ids, truth.ids, k)
    out["recall_diff"] = out["ivf_flat"] - out["faiss_ivf_flat"]
    return out


def goals(rows: list[dict], builds: list[dict], sentences: dict | None) -> list[dict[str, Any]]:
    """Issue 15's index goals: (what, our value, goal, met) for each."""

    def worst(ours: str) -> float:
        return min((r["qps_ratio"] for r in rows if r["ours"] == ours), default=float("nan"))

    out = [
        {"goal": "HNSW build vs hnswlib", "value": builds[0]["ratio"], "need": ">= 0.3"},
        {"goal": "HNSW search vs hnswlib (worst ef)", "value": worst("hnsw"), "need": ">= 0.5"},
        {
            "goal": "IVF-Flat search vs FAISS (worst nprobe)",
            "value": worst("ivf_flat"),
            "need": ">= 0.7",
        },
        {
            "goal": "IVF-PQ search vs FAISS (worst nprobe)",
            "value": worst("ivf_pq"),
            "need": ">= 0.5",
        },
    ]
    for g, bound in zip(out, (0.3, 0.5, 0.7, 0.5), strict=True):
        g["met"] = bool(g["value"] >= bound)
    if sentences is not None:
        diff = sentences["recall_diff"]
        out.append(
            {
                "goal": "IVF-Flat recall on sentences vs FAISS",
                "value": diff,
                "need": ">= -0.01",
                "met": bool(diff >= -0.01),
            }
        )
    return out


def versions() -> dict[str, str]:
    out = library_versions()
    for name in ("faiss-cpu", "hnswlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pq", action="store_true", help="skip IVF-PQ (slow to train)")
    parser.add_argument("--sentences", type=int, default=5000, help="0 skips part 3")
    args = parser.parse_args()

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    device = "cpu"
    ds = clustered(args.n, args.d, args.clusters, seed=0, n_queries=args.queries)
    truth = exact_knn(ds.data, ds.queries, args.k, device=device)
    k = args.k

    print(
        f"device {device}, 1 thread, {ds.name}, {args.queries} queries, k={k}, "
        f"best of {args.repeats}"
    )
    print("\n1. wrapper overhead: the same index searched through our wrapper and directly")
    print(
        f"{'index':<16}{'param':<14}{'recall':>8}{'direct q/s':>13}{'wrapper q/s':>13}{'ratio':>8}"
    )
    wrap = wrapper_rows(ds.data, ds.queries, truth, k, args.repeats)
    for r in wrap:
        print(
            f"{r['index']:<16}{r['param']:<14}{r['recall']:>8.4f}{r['direct_qps']:>13.1f}"
            f"{r['wrapper_qps']:>13.1f}{r['ratio']:>8.3f}"
        )

    print("\n2. from scratch vs library at equal parameters")
    print(
        f"{'ours / library':<26}{'param':<14}{'recall':>8}{'lib rec':>9}{'ours q/s':>11}"
        f"{'lib q/s':>11}{'q/s ratio':>11}"
    )
    rows, builds = scratch_rows(ds.data, ds.queries, truth, k, args.repeats, not args.no_pq)
    for r in rows:
        print(
            f"{r['ours'] + ' / ' + r['library']:<26}{r['param']:<14}{r['ours_recall']:>8.4f}"
            f"{r['library_recall']:>9.4f}{r['ours_qps']:>11.1f}{r['library_qps']:>11.1f}"
            f"{r['qps_ratio']:>11.4f}"
        )
    print(f"\n{'build':<26}{'ours s':>10}{'library s':>11}{'lib/ours':>10}")
    for b in builds:
        print(
            f"{b['ours'] + ' / ' + b['library']:<26}{b['ours_s']:>10.2f}{b['library_s']:>11.2f}"
            f"{b['ratio']:>10.4f}"
        )

    sentences = sentence_row(args.sentences, k) if args.sentences > 0 else None
    if sentences is not None:
        print(
            f"\n3. IVF-Flat on {sentences['sentences']} stdlib sentences (MiniLM), nlist 100, "
            f"nprobe 8: recall@{k} ours {sentences['ivf_flat']:.4f}, "
            f"FAISS {sentences['faiss_ivf_flat']:.4f}"
        )

    min_wrap = min(r["ratio"] for r in wrap)
    print(f"\nslowest wrapper/direct ratio {min_wrap:.3f} (goal >= 0.9)")
    print("\ngoals (issue 15)")
    met = goals(rows, builds, sentences)
    for g in met:
        print(f"{g['goal']:<42}{g['value']:>9.4f}  {g['need']:<9}{'met' if g['met'] else 'MISSED'}")
    figures: list[dict[str, Any]] = []
    for r in wrap:
        tag = f"{r['index']}[{r['param']}]"
        figures += [
            {
                "name": f"wrapper_qps:{tag}",
                "value": round(r["wrapper_qps"], 1),
                "unit": "queries/s",
            },
            {"name": f"direct_qps:{tag}", "value": round(r["direct_qps"], 1), "unit": "queries/s"},
        ]
    for r in rows:
        tag = f"{r['ours']}[{r['param']}]"
        figures += [
            {"name": f"recall:{tag}", "value": round(r["ours_recall"], 4), "unit": f"recall@{k}"},
            {
                "name": f"recall:{r['library']}[{r['param']}]",
                "value": round(r["library_recall"], 4),
                "unit": f"recall@{k}",
            },
            {"name": f"qps:{tag}", "value": round(r["ours_qps"], 1), "unit": "queries/s"},
            {
                "name": f"qps:{r['library']}[{r['param']}]",
                "value": round(r["library_qps"], 1),
                "unit": "queries/s",
            },
        ]
    for b in builds:
        figures += [
            {"name": f"build:{b['ours']}", "value": round(b["ours_s"], 3), "unit": "s"},
            {"name": f"build:{b['library']}", "value": round(b["library_s"], 3), "unit": "s"},
        ]
    ratios: dict[str, float] = {"wrapper/direct min": round(min_wrap, 4)}
    for r in wrap:
        ratios[f"wrapper/direct {r['index']}[{r['param']}]"] = round(r["ratio"], 4)
    for r in rows:
        key = f"{r['ours']}/{r['library']}[{r['param']}]"
        ratios[f"qps {key}"] = round(r["qps_ratio"], 4)
        ratios[f"recall diff {key}"] = round(r["recall_diff"], 4)
    for b in builds:
        ratios[f"build time {b['library']}/{b['ours']}"] = round(b["ratio"], 4)
    result = {
        "bench": "vindex",
        "device": device,
        "threads": 1,
        "n": args.n,
        "d": args.d,
        "queries": args.queries,
        "k": k,
        "figures": figures,
        "ratios": ratios,
        "sentences": sentences,
        "goals": met,
        "versions": versions(),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
