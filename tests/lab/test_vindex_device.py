"""Search sized by the device: the GPU's layouts of flat and IVF search, run on the CPU
against the CPU's own paths and brute force (``bench/gpu.py`` times them on a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learn.lab.vindex import FlatIndex, IVFFlatIndex, clustered
from learn.lab.vindex.base import SCAN_ELEMENTS
from learn.lab.vindex.flat import scan_elements
from learn.lab.vindex.lab import make_index
from tests.lab.test_vindex import brute_force

K = 10


@pytest.fixture(scope="module")
def ds():
    return clustered(3000, 24, clusters=12, seed=5, n_queries=60)


def test_the_cpu_keeps_its_cache_sized_blocks() -> None:
    assert scan_elements(torch.device("cpu")) == SCAN_ELEMENTS


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize(
    "budget",
    [10**9, 50 * 3000, 60 * 700, 7 * 300],  # one block; all queries; key blocks; both split
    ids=["one block", "all queries", "key blocks", "query and key blocks"],
)
def test_the_gpu_layout_equals_the_cpu_scan(ds, metric: str, budget: int) -> None:
    index = FlatIndex(metric)
    index.build(ds.data)
    want = index.search(ds.queries, K)
    qs = index_queries(index, ds.queries)
    got_d, got_i = index._search_batched(qs, K, budget)
    np.testing.assert_array_equal(got_i, want.ids)
    scale = 0.5 if metric == "cosine" else 1.0  # search halves |q - x|² into 1 - cos
    np.testing.assert_allclose(got_d * scale, want.distances, rtol=1e-4, atol=1e-4)


def test_the_gpu_layout_pads_when_k_exceeds_the_rows() -> None:
    data = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    index = FlatIndex()
    index.build(data)
    got_d, got_i = index._search_batched(data[:3], 8, budget=4)
    want_d, want_i = brute_force(data, data[:3], 5)
    np.testing.assert_array_equal(got_i[:, :5], want_i)
    np.testing.assert_allclose(got_d[:, :5], want_d, rtol=1e-4, atol=1e-4)
    assert (got_i[:, 5:] == -1).all() and np.isinf(got_d[:, 5:]).all()


def index_queries(index: FlatIndex, queries: np.ndarray) -> np.ndarray:
    """The queries as ``search`` hands them to ``_search`` (normalised for cosine)."""
    from learn.lab.vindex.base import prepare

    return prepare(queries, index.metric, index.d, "queries")


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("nprobe", [1, 3, 16])
def test_ivf_in_torch_equals_the_compiled_scan(ds, metric: str, nprobe: int) -> None:
    compiled = IVFFlatIndex(nlist=16, metric=metric, seed=0)
    in_torch = IVFFlatIndex(nlist=16, metric=metric, seed=0, engine="torch")
    compiled.build(ds.data)
    in_torch.build(ds.data)
    want = compiled.search(ds.queries, K, nprobe=nprobe)
    got = in_torch.search(ds.queries, K, nprobe=nprobe)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-4)


def test_ivf_in_torch_probing_every_cell_is_brute_force(ds) -> None:
    index = IVFFlatIndex(nlist=16, seed=0, engine="torch")
    index.build(ds.data)
    got = index.search(ds.queries, K, nprobe=16)
    want_d, want_i = brute_force(ds.data, ds.queries, K)
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_allclose(got.distances, want_d, rtol=1e-4, atol=1e-3)


def test_ivf_in_torch_pads_when_the_probed_cells_hold_fewer_than_k() -> None:
    ds = clustered(200, 8, clusters=20, seed=1, n_queries=10)
    compiled, in_torch = IVFFlatIndex(nlist=40, seed=0), IVFFlatIndex(nlist=40, engine="torch")
    compiled.build(ds.data)
    in_torch.build(ds.data)
    want, got = compiled.search(ds.queries, 30), in_torch.search(ds.queries, 30)
    assert (want.ids == -1).any()  # the case under test happens
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-4)


def test_ivf_takes_the_device_from_the_index_lab() -> None:
    assert make_index("ivf_flat", nlist=4).engine == "compiled"  # the CPU's default
    with pytest.raises(ValueError, match="CPU only"):
        IVFFlatIndex(device="cuda", engine="compiled")
    with pytest.raises(ValueError, match="engine must be"):
        IVFFlatIndex(engine="gpu")
