"""Our Triton flash-attention kernel against PyTorch's SDPA, run by Triton's interpreter.

The kernel is the one the GPU compiles; ``TRITON_INTERPRET=1`` runs the same program on CPU
tensors with numpy underneath. Triton reads that variable when it is imported (its own
``tl.max``/``tl.sum`` are decorated then), and ``torch._dynamo`` imports Triton, so an
earlier test may already have loaded it compiled: the cases therefore run in one child
process started with the variable set (this file, run as ``python -m``), and each test
reads its case's result. Sizes stay small: the interpreter is slow.

bf16 is not checked here: the interpreter multiplies bf16 tiles as raw bits (numpy has no
bf16), so ``bench/gpu.py`` checks bf16 on the GPU. What the GPU will run is also compiled
here, ahead of time, for Hopper (sm_90): Triton's compiler needs no GPU, and it rejects
what the lenient interpreter lets through.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="Triton is not installed (pip install triton): no kernel to build or interpret",
)

ROOT = Path(__file__).resolve().parents[2]
SHAPES = [  # (B, H, T, S, hs): ragged tiles, T != S both ways, one query, odd head sizes
    (1, 2, 64, 64, 64),
    (2, 1, 45, 45, 128),
    (1, 2, 33, 70, 64),
    (1, 1, 70, 33, 64),
    (1, 1, 1, 40, 64),
    (1, 2, 50, 50, 24),
]
DTYPES = ("float32", "float16")
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
ERRORS = [  # (case, the message flash_attention must raise)
    ("head size 4", "head size 4"),
    ("head size 512", "head size 512"),
    ("float64", "fp16, bf16 or fp32"),
    ("k and v differ", "expected q"),
]


def case_id(shape: tuple[int, ...], causal: bool, dtype: str) -> str:
    return f"{'x'.join(map(str, shape))}-{'causal' if causal else 'full'}-{dtype}"


def run_cases() -> dict[str, Any]:
    """Run every case in this process (which must have TRITON_INTERPRET=1 set before
    Triton was imported): max |ours - SDPA| per case, and the errors raised."""
    import torch
    import torch.nn.functional as F

    from learn.lab import flash_triton as ft

    torch.set_num_threads(1)
    small = ft.TileConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)
    out: dict[str, Any] = {"available": ft.available("cpu"), "diff": {}, "errors": {}}

    def diff(q: Any, k: Any, v: Any, causal: bool, config: Any = small) -> float:
        got = ft.flash_attention(q, k, v, causal, config)
        assert got.dtype == q.dtype and got.shape == q.shape
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
        return float((got.float() - ref).abs().max())  # NaN if any element is NaN

    g = torch.Generator().manual_seed(0)
    for shape in SHAPES:
        B, H, T, S, hs = shape
        base = [torch.randn(B, H, n, hs, generator=g) for n in (T, S, S)]
        for dtype in DTYPES:
            q, k, v = (t.to(getattr(torch, dtype)) for t in base)
            for causal in (False, True):
                out["diff"][case_id(shape, causal, dtype)] = diff(q, k, v, causal)
    # the default tiles: 128 query rows over 64-key tiles, several of each
    q, k, v = (torch.randn(1, 1, 300, 64, generator=g).half() for _ in range(3))
    out["diff"]["default tiles"] = diff(q, k, v, True, None)
    # q, k, v as strided views of a (B, T, 3, H, hs) projection, the layout a model makes
    rows = torch.randn(2, 40, 3, 2, 64, generator=g).half()
    q, k, v = (rows[:, :, i].transpose(1, 2) for i in range(3))
    out["diff"]["strided"] = diff(q, k, v, True)
    # the output starts as uninitialised memory: a skipped row would show, run after run
    q, k, v = (torch.randn(1, 1, 97, 64, generator=g) for _ in range(3))
    out["diff"]["every element, twice"] = max(diff(q, k, v, True), diff(q, k, v, True))

    bad = {
        "head size 4": [torch.zeros(1, 1, 8, 4)] * 3,
        "head size 512": [torch.zeros(1, 1, 8, 512)] * 3,
        "float64": [torch.zeros(1, 1, 8, 64, dtype=torch.float64)] * 3,
        "k and v differ": [torch.zeros(1, 1, 8, 64), torch.zeros(1, 1, 9, 64)] * 1
        + [torch.zeros(1, 1, 8, 64)],
    }
    for name, (q, k, v) in bad.items():
        try:
            ft.flash_attention(q, k, v)
            out["errors"][name] = None
        except ValueError as e:
            out["errors"][name] = str(e)
    return out


def compile_cases() -> dict[str, Any]:
    """Compile the default tiles for sm_90 (no GPU needed): {case: PTX facts or error}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from learn.lab import flash_triton as ft

    fn = ft._flash_fwd
    names = fn.arg_names
    constexprs = ("CAUSAL", "EVEN_D", "BLOCK_M", "BLOCK_N", "BLOCK_D")
    out: dict[str, Any] = {}
    for dtype in ("fp16", "bf16"):
        for d in (64, 128):
            for causal in (False, True):
                cfg = ft.default_config(d)
                sig = {
                    n: f"*{dtype}"
                    if n in ("Q", "K", "V", "Out")
                    else "fp32"
                    if n == "qk_scale"
                    else "constexpr"
                    if n in constexprs
                    else "i32"
                    for n in names
                }
                values = dict(
                    zip(constexprs, (causal, True, cfg.block_m, cfg.block_n, d), strict=True)
                )
                src = ASTSource(
                    fn=fn,
                    signature=sig,
                    constexprs={(names.index(k),): v for k, v in values.items()},
                )
                case = f"{dtype}-d{d}-{'causal' if causal else 'full'}"
                try:
                    kernel = triton.compile(
                        src,
                        target=GPUTarget("cuda", 90, 32),
                        options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
                    )
                    ptx = kernel.asm["ptx"]
                    out[case] = {"wgmma": "wgmma" in ptx, "shared": kernel.metadata.shared}
                except Exception as e:  # a compile error is the result under test
                    out[case] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    return out


def child(*args: str, interpret: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "tests.lab.test_flash_triton", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return child(interpret=True)


@pytest.fixture(scope="module")
def compiled() -> dict[str, Any]:
    return child("--compile", interpret=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_it_equals_sdpa(
    results: dict[str, Any], shape: tuple[int, ...], causal: bool, dtype: str
) -> None:
    got = results["diff"][case_id(shape, causal, dtype)]
    assert got < TOLERANCE[dtype]  # NaN fails too


@pytest.mark.parametrize("case", ["default tiles", "strided", "every element, twice"])
def test_it_covers_tiles_layouts_and_every_row(results: dict[str, Any], case: str) -> None:
    assert results["diff"][case] < 2e-2


@pytest.mark.parametrize(("case", "message"), ERRORS)
def test_it_rejects_what_it_cannot_run(results: dict[str, Any], case: str, message: str) -> None:
    raised = results["errors"][case]
    assert raised is not None and message in raised


def test_the_interpreter_makes_it_available_on_the_cpu(results: dict[str, Any]) -> None:
    assert results["available"] is True


def test_the_kernel_compiles_for_hopper_onto_its_tensor_cores(compiled: dict[str, Any]) -> None:
    """fp16 and bf16, head dims 64 and 128, causal and not, default tiles: each compiles
    for sm_90, its dots become wgmma (Hopper's warp-group matrix instructions), and its
    tiles fit in the 228 KiB of shared memory a multiprocessor has."""
    assert len(compiled) == 8
    for case, facts in compiled.items():
        assert "error" not in facts, (case, facts.get("error"))
        assert facts["wgmma"], case
        assert facts["shared"] <= 228 * 1024, case


if __name__ == "__main__":  # the child process, started by a fixture above
    print(json.dumps(compile_cases() if "--compile" in sys.argv else run_cases()))
