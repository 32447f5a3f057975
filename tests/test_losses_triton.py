"""The fused Triton PRSL against an independent float64 computation and the torch reference.

Every check in ``CHECKS`` runs twice:

* in Triton's CPU interpreter, inside child processes started with ``TRITON_INTERPRET=1``
  (triton decides between compiling and interpreting when it is first imported, so the variable
  cannot be switched on inside a test process that may already have imported it, and setting it
  here would force the CUDA runs below into the interpreter too). Each child is this file run as
  a script on a share of the checks; it writes one JSON verdict per check and
  ``test_interpreter`` reports each one. Plain ``pytest`` therefore runs them, with or without
  ``TRITON_INTERPRET`` set;
* on CUDA in this process (``test_cuda``), skipped with a visible reason without a GPU.

The float64 reference ranks the non-target logits with a stable descending sort, i.e. ties go to
the lower column, which is the kernel's documented tie rule: gradients are compared exactly even
for bf16 logits full of ties. Against the library's torch path (``torch.topk``, unspecified tie
order) values are always compared, gradients where ties cannot occur.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import background

if os.environ.get("CI") != "true":  # CI installs the dev extras: a missing triton must fail there
    pytest.importorskip("triton", reason="triton is not installed (it ships with the dev extras)")

from prsl.losses import (  # noqa: E402
    LossTerms,
    PRSLoss,
    get_loss,
    hf_loss,
    prsl_loss,
    prsl_terms,
    triton_prsl,
)

WEIGHT = 0.3  # large enough that R's gradient is far above the comparison tolerance
CE_FACTOR, R_FACTOR = 0.7, 1.3  # CE and R get different upstream gradients (not 1 : WEIGHT)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------------------------
# Independent reference
# ----------------------------------------------------------------------------------------------


def reference_terms(logits, labels, *, k, start, ignore_index=-100):
    """(CE, R) in float64 from the loss's definition, differentiable; ties ranked lower column
    first."""
    vocab = logits.shape[-1]
    z = logits.double().reshape(-1, vocab)
    y = labels.reshape(-1)
    counted = y != ignore_index
    n = int(counted.sum())
    safe = torch.where(counted, y, 0).unsqueeze(1)
    if n == 0:
        zero = (z * 0).sum()
        return zero, zero
    nll = torch.logsumexp(z, dim=1) - z.gather(1, safe).squeeze(1)
    ce = nll[counted].sum() / n
    competitors = z.scatter(1, safe, float("-inf"))  # the target ranks last
    ranked = competitors.sort(dim=1, descending=True, stable=True).values
    m = ranked[:, start : start + k].mean(dim=1)[counted]
    reg = -(m - torch.logsumexp(m, dim=0)).sum()
    return ce, reg


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------


EXTRACT, BULK = 10**9, 0  # bulk_min forcing one-by-one inserts / bitonic top-k merges


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, ...]  # logits shape without V: (N,) or (B, T)
    vocab: int
    k: int
    start: int = 0
    dtype: str = "float32"
    layout: str = "contiguous"  # or "row_strided" (padded rows), "col_strided" (every 2nd column)
    data: str = "normal"  # or "ties" (few distinct values), "ascending", "descending" rows,
    # "masked_head" (the first third of every row is -inf, as in a masked vocabulary)
    ignored: str = "random"  # or "ragged" (per-sequence prompt + padding), "none", "all"
    block_v: int | None = None
    bulk_min: int | None = EXTRACT  # the interpreter runs tl.topk slowly: opt in per case
    inplace: bool = False
    objective: str = "mix"  # CE_FACTOR * ce + R_FACTOR * R, or "loss" (ce + WEIGHT * R)
    ignore_index: int = -100


CASES = [
    Case("fp32_3d_ragged", (3, 9), 257, k=10, ignored="ragged"),
    Case("fp32_chunked_k10", (12,), 300, k=10, block_v=64, objective="loss"),
    Case(
        "fp32_k1_col_strided_bulk", (10,), 200, k=1, block_v=32, layout="col_strided", bulk_min=BULK
    ),
    Case("fp32_k128", (4,), 200, k=128, block_v=64),
    Case("fp32_k128_start3_bulk", (3,), 160, k=128, start=3, bulk_min=BULK),
    Case(
        "fp32_start7_row_strided_auto",
        (8,),
        240,
        k=10,
        start=7,
        layout="row_strided",
        block_v=64,
        bulk_min=None,
    ),
    Case("fp32_ascending_rows", (6,), 128, k=12, start=2, data="ascending", block_v=32, bulk_min=4),
    Case(
        "fp32_descending_rows", (6,), 128, k=12, start=2, data="descending", block_v=32, bulk_min=4
    ),
    Case("fp32_ties", (12,), 64, k=10, start=3, data="ties", block_v=16),
    Case("fp32_bulk_merges", (4,), 128, k=6, start=1, block_v=32, bulk_min=BULK),
    Case("fp32_ties_bulk", (8,), 64, k=6, start=5, data="ties", block_v=16, bulk_min=BULK),
    Case("fp32_custom_ignore_index", (10,), 100, k=5, ignore_index=7),
    Case("fp32_masked_head", (6,), 120, k=8, start=2, data="masked_head", block_v=16),
    Case("bf16_k10_start2", (16,), 300, k=10, start=2, dtype="bfloat16", block_v=128),
    Case("fp16_k20", (12,), 200, k=20, dtype="float16", ignored="none"),
    Case("fp32_all_ignored", (2, 3), 50, k=4, ignored="all"),
    Case("inplace_fp32_chunked", (2, 8), 180, k=10, start=1, inplace=True, block_v=32),
    Case(
        "inplace_bf16_loss_auto",
        (12,),
        150,
        k=6,
        dtype="bfloat16",
        inplace=True,
        objective="loss",
        block_v=32,
        bulk_min=None,
    ),
    Case("inplace_fp32_row_strided", (10,), 120, k=3, inplace=True, layout="row_strided"),
    Case(
        "inplace_fp16_col_strided",
        (8,),
        100,
        k=5,
        start=2,
        dtype="float16",
        layout="col_strided",
        inplace=True,
        block_v=32,
    ),
    Case("inplace_fp32_all_ignored", (5,), 40, k=4, ignored="all", inplace=True),
]


def make_inputs(case: Case, device: str):
    """(leaf, logits, labels): ``logits`` is a (possibly strided) view computed from ``leaf``."""
    gen = torch.Generator().manual_seed(sum(map(ord, case.name)))
    rows = int(torch.tensor(case.shape).prod())
    width = case.vocab * (2 if case.layout == "col_strided" else 1) + 5 * (
        case.layout == "row_strided"
    )
    values = torch.randn(rows, width, generator=gen) * 3
    if case.data == "ties":  # seven values, +0.0 and -0.0 among them
        values = torch.randint(0, 4, (rows, width), generator=gen).float()
        values = torch.where(torch.rand(rows, width, generator=gen) < 0.5, values, -values)
    elif case.data in ("ascending", "descending"):
        values = values.sort(dim=1, descending=case.data == "descending").values
    labels = torch.randint(0, case.vocab, (rows,), generator=gen)
    if case.data == "masked_head":  # whole leading chunks are -inf; no label points there
        values[:, : case.vocab // 3] = float("-inf")
        labels = labels.clamp(min=case.vocab // 3)
    if case.ignored == "random":
        labels[torch.rand(rows, generator=gen) < 0.3] = case.ignore_index
    elif case.ignored == "all":
        labels[:] = case.ignore_index
    elif case.ignored == "ragged":  # each sequence: a prompt prefix and padding, both ignored
        batch, time_steps = case.shape
        steps = torch.arange(time_steps)
        prompt = torch.randint(0, 3, (batch, 1), generator=gen)
        length = torch.randint(4, time_steps + 1, (batch, 1), generator=gen)
        counted = (steps >= prompt) & (steps < length)
        labels[~counted.reshape(-1)] = case.ignore_index
    leaf = values.to(device=device, dtype=DTYPES[case.dtype]).requires_grad_()
    # In-place mode overwrites its input: give it a non-leaf copy, never the leaf itself.
    source = leaf * 1.0 if case.inplace else leaf
    logits = view(case, source).reshape(*case.shape, case.vocab)
    return leaf, logits, labels.to(device).reshape(case.shape)


def view(case: Case, full: torch.Tensor) -> torch.Tensor:
    if case.layout == "col_strided":
        return full[:, ::2]
    if case.layout == "row_strided":
        return full[:, : case.vocab]
    return full


def objective(case: Case, ce, reg):
    return CE_FACTOR * ce + R_FACTOR * reg if case.objective == "mix" else ce + WEIGHT * reg


def tolerances(case: Case, reference_grad: torch.Tensor) -> dict:
    """fp32: 1e-5 relative; half precision: one rounding to the dtype (two in place)."""
    scale = float(reference_grad.abs().max()) or 1.0
    if case.dtype == "float32":
        return {"rtol": 1e-5, "atol": 1e-6 * scale}
    eps = torch.finfo(DTYPES[case.dtype]).eps
    return {"rtol": eps, "atol": eps * scale}


def check_parity(case: Case, device: str) -> None:
    leaf, logits, labels = make_inputs(case, device)
    params = dict(k=case.k, start=case.start, ignore_index=case.ignore_index)
    frozen = logits.detach().clone()  # in-place mode will overwrite ``logits``
    ref_input = frozen.double().requires_grad_()
    ref_ce, ref_reg = reference_terms(ref_input, labels, **params)
    objective(case, ref_ce, ref_reg).backward()
    torch_terms = prsl_terms(frozen, labels, weight=WEIGHT, backend="torch", **params)

    config = triton_prsl.KernelConfig(block_v=case.block_v, bulk_min=case.bulk_min)
    ce, reg = triton_prsl.fused_prsl(logits, labels, inplace=case.inplace, config=config, **params)
    terms = LossTerms(ce + WEIGHT * reg, ce, reg)
    objective(case, terms.ce, terms.regularizer).backward()

    for got, want in [(terms.ce, ref_ce), (terms.regularizer, ref_reg)]:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.loss, terms.ce + WEIGHT * terms.regularizer)
    for got, want in zip(terms, torch_terms, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    grad = view(case, leaf.grad).reshape(ref_input.shape)
    assert grad.dtype == DTYPES[case.dtype]
    want = ref_input.grad
    torch.testing.assert_close(grad.double(), want, **tolerances(case, want))
    outside = leaf.grad.clone()
    view(case, outside).zero_()
    assert not outside.any(), "gradient written outside the logits view"
    if case.ignored != "all":
        assert (want != 0).any()
    if case.data in ("normal", "masked_head") and case.dtype == "float32":  # no tied windows
        torch_input = frozen.clone().requires_grad_()
        torch_terms = prsl_terms(torch_input, labels, weight=WEIGHT, backend="torch", **params)
        objective(case, torch_terms.ce, torch_terms.regularizer).backward()
        torch.testing.assert_close(grad, torch_input.grad, **tolerances(case, want))


# ----------------------------------------------------------------------------------------------
# Behaviour beyond parity
# ----------------------------------------------------------------------------------------------


def check_public_api_routes_to_kernel(device: str) -> None:
    case = Case("api", (2, 2), 24, k=3, start=1)
    _, logits, labels = make_inputs(case, device)
    logits = logits.detach()
    params = dict(k=3, start=1, weight=WEIGHT)
    ce, reg = triton_prsl.fused_prsl(logits, labels, k=3, start=1)
    fused = LossTerms(ce + WEIGHT * reg, ce, reg)
    assert torch.equal(prsl_loss(logits, labels, backend="triton", **params), fused.loss)
    assert torch.equal(PRSLoss(backend="triton", **params)(logits, labels), fused.loss)
    assert torch.equal(get_loss("prsl", backend="triton", **params)(logits, labels), fused.loss)
    via_terms = prsl_terms(logits, labels, backend="triton", **params)
    assert all(torch.equal(a, b) for a, b in zip(via_terms, fused, strict=True))
    if device == "cuda":  # "auto" takes the kernel for CUDA logits it supports
        assert torch.equal(prsl_loss(logits, labels, **params), fused.loss)


def check_hf_loss_with_gradient_accumulation(device: str) -> None:
    """hf_loss rescales CE alone (num_items_in_batch): CE and R gradients must stay separate."""
    case = Case("hf", (2, 6), 90, k=4)
    leaf, _, labels = make_inputs(case, device)
    grads = {}
    for backend in ("torch", "triton"):
        logits = leaf.detach().reshape(2, 6, 90).clone().requires_grad_()
        compute = hf_loss("prsl", shift=True, k=4, weight=WEIGHT, backend=backend)
        compute({"logits": logits}, labels, num_items_in_batch=37).backward()
        grads[backend] = logits.grad
    scale = float(grads["torch"].abs().max())
    torch.testing.assert_close(grads["triton"], grads["torch"], rtol=1e-5, atol=1e-6 * scale)


def check_inplace_overwrites_logits_with_ce_gradient(device: str) -> None:
    case = Case("overwrite", (6,), 70, k=3, inplace=True)
    _, logits, labels = make_inputs(case, device)
    before = logits.detach().clone()
    with torch.no_grad():  # no gradient needed: nothing is overwritten
        triton_prsl.fused_prsl(logits, labels, k=3, inplace=True)
    assert torch.equal(logits, before)
    triton_prsl.fused_prsl(logits, labels, k=3, inplace=True)
    counted = labels != -100
    probs = before.double().softmax(dim=1)
    onehot = torch.nn.functional.one_hot(torch.where(counted, labels, 0), 70)
    want = (probs - onehot) / int(counted.sum()) * counted.unsqueeze(1)
    torch.testing.assert_close(logits.detach().double(), want, rtol=1e-5, atol=1e-8)


def check_inplace_fails_loudly_when_logits_are_saved_elsewhere(device: str) -> None:
    case = Case("saved", (6,), 40, k=3)
    leaf, _, labels = make_inputs(case, device)
    logits = leaf.tanh()  # tanh saves its output for its own backward
    ce, reg = triton_prsl.fused_prsl(logits, labels, k=3, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (ce + WEIGHT * reg).backward()


def check_out_of_range_label_gives_nan_not_a_bad_read(device: str) -> None:
    case = Case("bad_label", (5,), 30, k=3, ignored="none")
    _, logits, labels = make_inputs(case, device)
    labels[2] = 30
    ce, _ = triton_prsl.fused_prsl(logits.detach(), labels, k=3)
    assert torch.isnan(ce)


CHECKS: dict[str, Callable[[str], None]] = {
    f"parity_{case.name}": (lambda device, case=case: check_parity(case, device)) for case in CASES
}
CHECKS.update(
    {
        fn.__name__.removeprefix("check_"): fn
        for fn in [
            check_public_api_routes_to_kernel,
            check_hf_loss_with_gradient_accumulation,
            check_inplace_overwrites_logits_with_ce_gradient,
            check_inplace_fails_loudly_when_logits_are_saved_elsewhere,
            check_out_of_range_label_gives_nan_not_a_bad_read,
        ]
    }
)


# ----------------------------------------------------------------------------------------------
# Runners
# ----------------------------------------------------------------------------------------------


def run_checks(device: str, names: list[str]) -> dict[str, dict]:
    """Run the checks, never stopping at a failure: name -> {"error": traceback|None, "s": t}."""
    verdicts = {}
    for name in names:
        began = time.perf_counter()
        try:
            CHECKS[name](device)
            error = None
        except Exception:
            error = traceback.format_exc()
        verdicts[name] = {"error": error, "s": round(time.perf_counter() - began, 2)}
    return verdicts


INTERPRETER_SHARDS = 2  # child processes, each running every 2nd check (CI has 2 cores)


def _interpreter_child(shard: int) -> background.Job:
    return background.Job(
        f"triton-interpreter-{shard}",
        "interpreter_verdicts",
        lambda folder: (
            [sys.executable, __file__, str(folder / "verdicts.json"), str(shard)]
            + [str(INTERPRETER_SHARDS)]
        ),
        env={"TRITON_INTERPRET": "1"},
        timeout=600,
    )


BACKGROUND = [_interpreter_child(shard) for shard in range(INTERPRETER_SHARDS)]
"""Started when the session starts (tests/background.py): they run beside the other tests."""


@pytest.fixture(scope="module")
def interpreter_verdicts() -> dict[str, dict]:
    verdicts = {}
    for job in BACKGROUND:
        done = background.outcome(job)
        out = done.folder / "verdicts.json"
        if done.returncode != 0 or not out.exists():
            pytest.fail(f"interpreter child failed (rc={done.returncode}):\n{done.output[-4000:]}")
        verdicts.update(json.loads(out.read_text()))
    return verdicts


@pytest.mark.parametrize("name", list(CHECKS))
def test_interpreter(name, interpreter_verdicts):
    verdict = interpreter_verdicts[name]
    assert verdict["error"] is None, f"in the Triton interpreter:\n{verdict['error']}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(CHECKS))
def test_cuda(name):
    CHECKS[name]("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("k,start", [(10, 0), (100, 0), (128, 5)])
def test_cuda_realistic_vocabulary(k, start):
    """GPT-2's vocabulary in bf16 (ties everywhere): exact against the stable-sort reference."""
    case = Case("realistic", (512,), 50257, k=k, start=start, dtype="bfloat16")
    check_parity(case, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_auto_falls_back_for_float64():
    logits = torch.randn(6, 30, dtype=torch.float64, device="cuda")
    labels = torch.randint(0, 30, (6,), device="cuda")
    got = prsl_loss(logits, labels, k=3, backend="auto")
    assert torch.equal(got, prsl_loss(logits, labels, k=3, backend="torch"))


# ----------------------------------------------------------------------------------------------
# Backend selection (this process, compiled mode)
# ----------------------------------------------------------------------------------------------


def small_batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, 30, generator=gen), torch.randint(0, 30, (2, 5), generator=gen)


def test_unknown_backend_is_a_value_error():
    logits, labels = small_batch()
    message = r"backend must be one of 'auto', 'torch', 'triton'; got 'cuda'"
    with pytest.raises(ValueError, match=message):
        prsl_loss(logits, labels, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        prsl_terms(logits, labels, backend="")
    with pytest.raises(ValueError, match="backend must be one of"):
        PRSLoss(backend="Triton")


def test_auto_on_cpu_is_the_torch_reference():
    logits, labels = small_batch()
    auto = prsl_terms(logits, labels, k=4, start=1, weight=WEIGHT)
    reference = prsl_terms(logits, labels, k=4, start=1, weight=WEIGHT, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(auto, reference, strict=True))


@pytest.mark.skipif(
    triton_prsl.INTERPRETED, reason="this process runs triton's interpreter (TRITON_INTERPRET=1)"
)
def test_triton_backend_on_cpu_without_interpreter_says_why():
    logits, labels = small_batch()
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        prsl_loss(logits, labels, backend="triton")


@pytest.mark.parametrize(
    "dtype,k,start,message",
    [
        (torch.float64, 4, 0, "torch.float64 logits are not supported"),
        (torch.float32, 1000, 25, "start \\+ k = 1025 exceeds the kernel's limit of 1024"),
    ],
)
def test_unsupported_inputs_name_the_reason(dtype, k, start, message):
    logits = torch.randn(3, 2000, dtype=dtype)
    labels = torch.zeros(3, dtype=torch.long)
    with pytest.raises(RuntimeError, match=message):
        prsl_terms(logits, labels, k=k, start=start, backend="triton")
    auto = prsl_terms(logits, labels, k=k, start=start, backend="auto")
    assert torch.equal(
        auto.loss, prsl_terms(logits, labels, k=k, start=start, backend="torch").loss
    )


@pytest.mark.parametrize(
    "config,message",
    [
        ({"block_v": 48}, "block_v must be a power of two >= 1 .*got 48"),
        ({"block_v": 0}, "block_v must be a power of two >= 1 .*got 0"),
        ({"bulk_min": -1}, "bulk_min must be an integer >= 0 .*got -1"),
    ],
)
def test_bad_kernel_config_is_a_value_error(config, message):
    logits, labels = small_batch()
    with pytest.raises(ValueError, match=message):
        triton_prsl.fused_prsl(logits, labels, k=3, config=triton_prsl.KernelConfig(**config))


def test_window_validation_comes_first():
    logits, labels = small_batch()
    with pytest.raises(ValueError, match="start \\+ k = 30 must be < vocabulary size V = 30"):
        triton_prsl.fused_prsl(logits, labels, k=30)


if __name__ == "__main__":  # interpreter child: python test_losses_triton.py OUT SHARD SHARDS
    if not triton_prsl.INTERPRETED:
        sys.exit("run with TRITON_INTERPRET=1 set before triton is imported")
    out, shard, shards = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    Path(out).write_text(json.dumps(run_checks("cpu", list(CHECKS)[shard::shards]), indent=1))
