"""Hessian speed: hesslib beside pyhessian and hessian-eigenthings on the same work.

For M1/MNIST and C1/CIFAR-10, each trained briefly with ``hesslib.train``, on a
fixed set of real training samples (eval mode, mean cross-entropy), it measures:

* the seconds of one gradient and of one Hessian-vector product (hvp), and
  their ratio, for hesslib (kept graph; and the naive recomputing double
  backward), pyhessian's product and hessian-eigenthings' product;
* the products, seconds and peak memory (resident set growth, sampled) that
  each solver needs so that every one of the top 1 / top 20 eigenvalues has
  relative error at most 1e-4, judged against a reference Lanczos run;
* hesslib's Lanczos both certified (stopped by its residual rule, no
  reference needed) and tuned as the peers are (the fewest steps that reach
  the target, found with the reference);
* for the peers, settings tuned to reach the target within a time budget of
  ``--peer-budget`` times hesslib's time for the same target. A peer that
  does not reach it is "not reached", with the error it returned.

By default M1 runs the top 1 and the top 20 and C1 the top 1 (``--top``
sets one list for every model): C1's top 20 alone would take more than the
30 minutes the whole run is given on a 2-core CPU.

Run: ``HESSLIB_DATA=/path/to/data python benchmarks/hessian_speed.py [--quick]``.
The last line printed is ``hvp/grad ratio: <C1 ratio>``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import platform
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hesslib.data import balanced_subset, load  # noqa: E402
from hesslib.hessian import (  # noqa: E402
    ConvergenceWarning,
    LinearOperator,
    WeightHessian,
    lanczos,
    power_iteration,
)
from hesslib.hessian.solvers import (  # noqa: E402
    DEFAULT_LANCZOS_MAX_ITER as DEFAULT_MAX_ITER,
)
from hesslib.models import build_model  # noqa: E402
from hesslib.train import TrainConfig, train  # noqa: E402

TARGET_RTOL = 1e-4  # every eigenvalue within 1e-4 relative (the paper's Fig. 1)
SOLVER_TOL = 1e-4  # hesslib's stopping rule: true relative residual <= 1e-4
# float64 reference: its relative residual bounds each eigenvalue's relative
# error (Bauer-Fike), 100 times below the target
REF_TOL_F64 = 1e-6
REF_TOL_MIXED = 1e-5  # float32 products: their round-off may stop it above this
REF_MAX_ITER = 400
REF_MAX_ITER_MIXED = 150  # where float32 round-off stalls the residual
# a float64 model for the reference unless its product costs more than this
# many float32 ones (M1: about 3; C1: about 6, no oneDNN float64 convolution)
F64_AFFORDABLE = 4
PYHESSIAN_TOL = 1e-6  # its relative-change rule needs ~100x below the target
EIGENTHINGS_POWER_TOL = 1e-4  # its rule also requires residual < tol
POWER_FACTOR = 5  # hesslib power iteration may use 5x Lanczos' products
TUNED_TOL = 1e-12  # a tuned run stops at its max_iter, never on its residual
RSS_SAMPLE_S = 0.02
BATCH = 128
SEED = 0

FULL = {"M1": ("mnist", 2048, 4096), "C1": ("cifar10", 512, 4096)}
QUICK = {"M1": ("mnist", 512, 1024), "C1": ("cifar10", 128, 1024)}
TOPS = {"M1": (1, 20), "C1": (1,)}  # what fits the full run's 30 minutes


# ---------------------------------------------------------------- measuring


class PeakRSS:
    """Peak growth of the resident set during a block, sampled by a thread."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(RSS_SAMPLE_S)

    def __enter__(self) -> PeakRSS:
        self._base = self._max = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._rss())
        self.peak_mb = (self._max - self._base) / 2**20


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Row:
    """One solver run against one target."""

    model: str
    k: int
    method: str
    products: int | None
    seconds: float | None
    rel_err: float | None
    peak_mb: float | None
    note: str = ""
    reached: bool = field(init=False)

    def __post_init__(self) -> None:
        self.reached = self.rel_err is not None and self.rel_err <= TARGET_RTOL


def max_rel_err(values: Tensor | list[float], ref: Tensor) -> float:
    """Largest relative error of the top-k values (sorted descending)."""
    got = torch.as_tensor(values, dtype=torch.float64).flatten()
    got = got.sort(descending=True).values[: ref.numel()]
    if got.numel() < ref.numel():
        return math.inf
    return ((got - ref) / ref.abs()).abs().max().item()


# ---------------------------------------------------------------- problems


def setup(name: str, sizes: tuple[str, int, int], data_root: str | None):
    """Train ``name`` briefly; return (model in eval mode, x, y, train seconds)."""
    data_name, n_hess, n_train = sizes
    data = load(data_name, root=data_root)
    split = balanced_subset(data.train, n_train, seed=SEED)
    test = balanced_subset(data.test, 512, seed=SEED)
    model = build_model(name, seed=SEED)
    config = TrainConfig(epochs=2, batch_size=BATCH, seed=SEED, grad_norm_samples=256)
    start = time.perf_counter()
    train(model, split, test, config)
    seconds = time.perf_counter() - start
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model, split.x[:n_hess], split.y[:n_hess], seconds


def gradient(model: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
    """One full gradient of the mean loss, in batches of ``BATCH``."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for xb, yb in zip(x.split(BATCH), y.split(BATCH), strict=True):
        loss = F.cross_entropy(model(xb), yb) * (len(yb) / len(y))
        for t, g in zip(total, torch.autograd.grad(loss, params), strict=True):
            t += g
    return total


class Float64View(LinearOperator):
    """A float32 operator seen in float64 (the solver's arithmetic in float64)."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.size, torch.float64, op.device)
        self.op = op

    def _matmat(self, mat: Tensor) -> Tensor:
        return self.op.matmat(mat.float()).double()


def reference(model, x, y, k, quick, log):
    """Top-``k`` reference eigenvalues and a description of their check."""
    f64_cost = None
    m64 = copy.deepcopy(model).double()
    op64 = WeightHessian(m64, F.cross_entropy, (x.double(), y), check_determinism=False)
    probe = torch.randn(op64.size, dtype=torch.float64)
    f64_cost = median_seconds(functools.partial(op64.matvec, probe), 1)  # warmed up
    op32 = WeightHessian(model, F.cross_entropy, (x, y), check_determinism=False)
    f32_cost = median_seconds(lambda: op32.matvec(probe.float()), 1)
    use_f64 = f64_cost < F64_AFFORDABLE * max(f32_cost, 1e-3)
    gen = torch.Generator().manual_seed(SEED + 1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if use_f64:
            res = lanczos(op64, k=k, tol=REF_TOL_F64, max_iter=REF_MAX_ITER,
                          generator=gen)
            how = (f"float64 model, Lanczos to true float64 residuals <= "
                   f"{res.residuals.max().item():.1e}")
        else:
            res = lanczos(Float64View(op32), k=k + 1, tol=REF_TOL_MIXED,
                          max_iter=REF_MAX_ITER_MIXED, generator=gen)
            how = (f"float64 Lanczos on float32 products (a float64 product costs "
                   f"{f64_cost:.1f} s here), residuals <= "
                   f"{res.residuals[:k].max().item():.1e}, error bound r^2 "
                   f"|lam| / gap <= {_gap_bound(res, k):.1e}")
    seconds = time.perf_counter() - start
    if not res.converged:
        how += " (NOT converged: judge the rows below with care)"
    vals = res.eigenvalues.double()[:k]
    if not use_f64 and not quick:  # check the top pair with the float64 model
        v = res.eigenvectors[:, 0].double()
        r = torch.linalg.vector_norm(op64.matvec(v) - vals[0] * v) / vals[0].abs()
        how += f"; top pair's float64 residual {r.item():.1e}"
    del op64, m64
    log(f"  reference: {res.num_products} products, {seconds:.0f} s; {how}")
    return vals, how, res.num_products


def _gap_bound(res, k: int) -> float:
    """Largest ``r^2 |lam| / gap`` (relative) over the top ``k`` of ``k + 1``.

    With relative residual ``r`` and ``gap`` the distance to the nearest other
    Ritz value, the Rayleigh quotient's relative error is at most about
    ``r^2 |lam| / gap`` (Kato-Temple), far below ``r`` when the gap is wide.
    """
    vals = res.eigenvalues.double()
    bounds = []
    for i in range(k):
        others = torch.cat([vals[:i], vals[i + 1 :]])
        gap = (others - vals[i]).abs().min().item()
        r = res.residuals[i].item()
        bounds.append(r * r * abs(vals[i].item()) / max(gap, 1e-300))
    return max(bounds)


# ---------------------------------------------------------------- the runs


class Recorder(LinearOperator):
    """Forwards products and keeps each vector and product, for tuning.

    The rows are allocated and touched before the timed run, so recording
    adds no resident-set growth to it, only two copies per product.
    """

    def __init__(self, op: LinearOperator, capacity: int):
        super().__init__(op.size, op.dtype, op.device)
        self.op, self.count = op, 0
        self.vecs = torch.zeros(capacity, op.size, dtype=op.dtype)
        self.prods = torch.zeros_like(self.vecs)

    def _matmat(self, mat: Tensor) -> Tensor:
        out = self.op.matmat(mat)
        j = mat.shape[1]
        self.vecs[self.count : self.count + j] = mat.T
        self.prods[self.count : self.count + j] = out.T
        self.count += j
        return out

    def fewest_steps(self, ref: Tensor) -> int | None:
        """Fewest Lanczos steps whose Ritz values reach the target, or None.

        The recorded vectors are hesslib's Lanczos basis, in order, so the
        Ritz values after ``m`` steps are the eigenvalues of the leading
        ``m x m`` block of ``Q^T H Q``.
        """
        q, w = self.vecs[: self.count].double(), self.prods[: self.count].double()
        t = q @ w.T  # float64 sums, as the solver's reported values
        return fewest_steps((t + t.T) / 2, ref)


def fewest_steps(t: Tensor, ref: Tensor) -> int | None:
    """Smallest ``m`` whose leading ``m x m`` block of ``t`` reaches the target.

    ``t`` is the projection ``Q^T H Q`` of a Lanczos run with full
    reorthogonalization (float64): the run of ``m`` steps from the same start
    has its leading block, so one long run tunes ``max_iter`` exactly.
    """
    for m in range(ref.numel(), t.shape[0] + 1):
        if max_rel_err(torch.linalg.eigvalsh(t[:m, :m]), ref) <= TARGET_RTOL:
            return m
    return None


def run_hesslib(name, op, k, solver, ref, max_iter=None, tol=SOLVER_TOL):
    """One hesslib run, the graph rebuilt inside the timed region."""
    base = op.op if isinstance(op, Recorder) else op
    base.clear_graph_cache()
    gen = torch.Generator().manual_seed(SEED)
    kwargs = {"tol": tol, "generator": gen}
    if max_iter is not None:
        kwargs["max_iter"] = max_iter
    with warnings.catch_warnings(), PeakRSS() as rss:
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        res = solver(op, k=k, **kwargs)
        seconds = time.perf_counter() - start
    label = "lanczos" if solver is lanczos else "power"
    note = ""
    if not res.converged and solver is power_iteration:
        note = f"its residual rule not met within max_iter={max_iter} per pair"
    elif not res.converged:
        note = f"residual rule not met after {res.num_products} products"
    return Row(name, k, f"hesslib {label}", res.num_products, seconds,
               max_rel_err(res.eigenvalues, ref), rss.peak_mb, note)


def run_hesslib_certified_and_tuned(name, op, k, ref, log):
    """hesslib Lanczos twice: certified (no reference) and tuned as the peers.

    The certified run stops on its residual rule (``tol=1e-4``), which needs
    no reference. The peers' settings are tuned against the reference, so the
    tuned row does the same for hesslib: the fewest steps whose Ritz values
    reach the target (read off the certified run's recorded basis, as for
    hessian-eigenthings' Lanczos), then a timed run of exactly those steps.
    """
    recorder = Recorder(op, DEFAULT_MAX_ITER)
    certified = run_hesslib(name, recorder, k, lanczos, ref)
    log(f"  {fmt_row(certified)}")
    steps = recorder.fewest_steps(ref)
    del recorder
    if steps is None:
        tuned = Row(name, k, "hesslib lanczos tuned", None, None, None, None,
                    "no step count of the certified run reaches")
        log(f"  {fmt_row(tuned)}")
        return certified, tuned
    tuned = run_hesslib(name, op, k, lanczos, ref, max_iter=steps, tol=TUNED_TOL)
    tuned.method = "hesslib lanczos tuned"
    tuned.note = f"max_iter={steps} (smallest that reaches the target)"
    log(f"  {fmt_row(tuned)}")
    return certified, tuned


def run_pyhessian(name, model, x, y, k, ref, budget_s, hvp_s):
    """pyhessian 0.1 power iteration, maxIter from the time budget."""
    try:
        import pyhessian

        ph = sys.modules["pyhessian.hessian"]  # the module, not the class
    except Exception as exc:  # noqa: BLE001 - report any import failure
        return Row(name, k, "pyhessian power", None, None, None, None,
                   f"unavailable: {exc!r}")
    max_iter = max(2, int(budget_s / hvp_s / k))
    counter = [0]
    original = ph.hessian_vector_product

    def counting(*args):
        counter[0] += 1
        return original(*args)

    ph.hessian_vector_product = counting
    torch.manual_seed(SEED)
    try:
        with PeakRSS() as rss:
            start = time.perf_counter()
            hess = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y),
                                     cuda=False)
            vals, _ = hess.eigenvalues(maxIter=max_iter, tol=PYHESSIAN_TOL, top_n=k)
            seconds = time.perf_counter() - start
            del hess
    except Exception as exc:  # noqa: BLE001 - report a crash instead of a number
        return Row(name, k, "pyhessian power", None, None, None, None,
                   f"crashed: {exc!r}")
    finally:
        ph.hessian_vector_product = original
        model.zero_grad(set_to_none=True)
    note = f"tol={PYHESSIAN_TOL:g}, maxIter={max_iter}"
    return Row(name, k, "pyhessian power", counter[0], seconds,
               max_rel_err(vals, ref), rss.peak_mb, note)


def eigenthings_operator(model, x, y):
    import hessian_eigenthings as he

    batches = list(zip(x.split(BATCH), y.split(BATCH), strict=True))
    if len({len(b[1]) for b in batches}) != 1:
        raise ValueError("hessian-eigenthings averages batches equally: use even ones")
    op = he.HessianOperator(model, batches, he.supervised_loss(F.cross_entropy))
    counter = [0]

    def matvec(v: Tensor) -> Tensor:
        counter[0] += 1
        return op.matvec(v)

    wrapped = he.LambdaOperator(matvec, size=op.size, device=op.device, dtype=op.dtype)
    return wrapped, counter


def run_eigenthings(name, model, x, y, k, ref, budget_s, hvp_s, mode):
    """hessian-eigenthings v1: deflated power iteration or Lanczos."""
    label = f"eigenthings {mode}"
    try:
        import hessian_eigenthings as he
    except Exception as exc:  # noqa: BLE001
        return Row(name, k, label, None, None, None, None, f"unavailable: {exc!r}")
    cap = max(k + 1, int(budget_s / hvp_s))
    try:
        op, counter = eigenthings_operator(model, x, y)
        if mode == "power_iter":
            max_iter = max(2, cap // k)
            note = f"tol={EIGENTHINGS_POWER_TOL:g}, max_iter={max_iter}"

            def solve():
                return he.deflated_power_iteration(
                    op, k=k, max_iter=max_iter, tol=EIGENTHINGS_POWER_TOL, seed=SEED)
        else:
            steps = eigenthings_lanczos_steps(he, op, k, ref, cap)
            if steps is None:
                res = he.lanczos(op, k=k, max_iter=cap, tol=TARGET_RTOL,
                                 reorthogonalize=True, seed=SEED, which="LA")
                err = max_rel_err(res.eigenvalues, ref)
                return Row(name, k, label, cap, None, err, None,
                           f"not reached with max_iter={cap} (the budget)")
            note = f"max_iter={steps} (smallest that reaches the target)"

            def solve():
                return he.lanczos(op, k=k, max_iter=steps, tol=TARGET_RTOL,
                                  reorthogonalize=True, seed=SEED, which="LA")
        counter[0] = 0
        with PeakRSS() as rss:
            start = time.perf_counter()
            res = solve()
            seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        return Row(name, k, label, None, None, None, None, f"crashed: {exc!r}")
    return Row(name, k, label, counter[0], seconds,
               max_rel_err(res.eigenvalues, ref), rss.peak_mb, note)


def eigenthings_lanczos_steps(he, op, k, ref, cap):
    """Smallest step count that reaches the target, from one run of ``cap``."""
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    v0 = torch.randn(op.size, dtype=op.dtype, generator=gen)
    td = he.lanczos_tridiagonal(op, v0, cap, reorthogonalize=True)
    alphas = torch.as_tensor(td.alphas, dtype=torch.float64)
    betas = torch.as_tensor(td.betas, dtype=torch.float64)[: len(alphas) - 1]
    t = torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)
    return fewest_steps(t, ref)


# ---------------------------------------------------------------- one model


def bench_model(name, sizes, tops, args, log):
    rows: list[Row] = []
    model, x, y, train_s = setup(name, sizes, args.data)
    log(f"{name}: trained {train_s:.0f} s on {sizes[2]} samples; Hessian of "
        f"{len(y)} samples, {sum(p.numel() for p in model.parameters()):,} parameters")
    start = time.perf_counter()
    op = WeightHessian(model, F.cross_entropy, (x, y))
    check_s = time.perf_counter() - start
    naive = WeightHessian(model, F.cross_entropy, (x, y), check_determinism=False,
                          graph_cache_batches=0)
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(SEED))
    reps = args.repeats
    times = {"gradient": median_seconds(lambda: gradient(model, x, y), reps)}
    times["hvp hesslib"] = median_seconds(lambda: op.matvec(v), reps)
    op.clear_graph_cache()
    start = time.perf_counter()
    op.matvec(v)
    times["hvp hesslib first"] = time.perf_counter() - start
    times["hvp naive"] = median_seconds(lambda: naive.matvec(v), reps)
    times["gradient again"] = median_seconds(lambda: gradient(model, x, y), reps)
    times.update(peer_hvp_times(model, x, y, v, reps))
    grad_s = statistics.median([times["gradient"], times["gradient again"]])
    log(f"  determinism check at construction: {check_s:.1f} s")
    for key, value in times.items():
        log(f"  {key:28s} {value:8.3f} s   {value / grad_s:5.2f} gradients")
    ref, how, _ = reference(model, x, y, max(tops), args.quick, log)
    hvp_pyhessian = times.get("hvp pyhessian") or times["hvp naive"]
    hvp_eigenthings = times.get("hvp eigenthings") or times["hvp naive"]
    for k in tops:
        ref_k = ref[:k]
        lz, tuned = run_hesslib_certified_and_tuned(name, op, k, ref_k, log)
        per_pair = math.ceil(POWER_FACTOR * lz.products / k) + 1
        power = run_hesslib(name, op, k, power_iteration, ref_k, per_pair)
        log(f"  {fmt_row(power)}")
        budget = args.peer_budget * lz.seconds
        peers = [run_pyhessian(name, model, x, y, k, ref_k, budget, hvp_pyhessian)]
        log(f"  {fmt_row(peers[-1])}")
        for mode in ("power_iter", "lanczos"):
            peers.append(run_eigenthings(name, model, x, y, k, ref_k, budget,
                                         hvp_eigenthings, mode))
            log(f"  {fmt_row(peers[-1])}")
        rows += [lz, tuned, power, *peers]
    return rows, times, grad_s, how


def peer_hvp_times(model, x, y, v, reps):
    out = {}
    try:
        import pyhessian
        from pyhessian.utils import hessian_vector_product

        hess = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        parts = [c.view_as(p) for c, p in zip(v.split([p.numel() for p in hess.params]),
                                              hess.params, strict=True)]
        out["hvp pyhessian"] = median_seconds(
            lambda: hessian_vector_product(hess.gradsH, hess.params, parts), reps)
    except Exception as exc:  # noqa: BLE001
        print(f"  pyhessian product failed: {exc!r}")
    finally:
        model.zero_grad(set_to_none=True)
    try:
        op, _ = eigenthings_operator(model, x, y)
        out["hvp eigenthings"] = median_seconds(lambda: op.matvec(v), reps)
    except Exception as exc:  # noqa: BLE001
        print(f"  hessian-eigenthings product failed: {exc!r}")
    return out


def fmt_row(row: Row) -> str:
    prod = "-" if row.products is None else str(row.products)
    sec = "-" if row.seconds is None else f"{row.seconds:.1f}"
    err = "-" if row.rel_err is None else f"{row.rel_err:.1e}"
    mem = "-" if row.peak_mb is None else f"{row.peak_mb:.0f}"
    status = "reached" if row.reached else "NOT reached"
    return (f"{row.model:3s} top-{row.k:<3d} {row.method:22s} {prod:>6s} {sec:>8s} "
            f"{err:>9s} {mem:>7s}  {status:12s} {row.note}")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller problems (M1 512, C1 128 samples): minutes")
    parser.add_argument("--models", nargs="+", default=["M1", "C1"],
                        choices=sorted(FULL))
    parser.add_argument("--top", nargs="+", type=positive_int, default=None,
                        help="top-k targets for every model (default: M1 1 20, C1 1)")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument(
        "--threads", type=positive_int, default=len(os.sched_getaffinity(0)),
        help="torch threads (default: one per usable core); use 1 on a machine shared "
        "with other jobs, where threads waiting on busy cores ran several times "
        "slower")
    parser.add_argument("--peer-budget", type=float, default=1.0,
                        help="peers' time budget, in multiples of hesslib's time")
    parser.add_argument("--data", default=None, help="data folder ($HESSLIB_DATA)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    log(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; quick={args.quick}")
    sizes = QUICK if args.quick else FULL
    rows, ratios = [], {}
    for name in args.models:
        tops = args.top or TOPS[name]
        model_rows, times, grad_s, _ = bench_model(name, sizes[name], tops, args, log)
        rows += model_rows
        ratios[name] = times["hvp hesslib"] / grad_s
    print()
    print(f"target: every eigenvalue within {TARGET_RTOL:g} relative; peers' budget "
          f"{args.peer_budget:g} x hesslib's time; memory = peak RSS growth (MB)")
    print(f"{'':3s} {'':8s} {'method':22s} {'hvps':>6s} {'seconds':>8s} "
          f"{'rel err':>9s} {'peak MB':>7s}  status")
    for row in rows:
        print(fmt_row(row))
    for name, ratio in ratios.items():
        print(f"{name}: hvp/grad {ratio:.2f}")
    print(f"total {time.perf_counter() - start:.0f} s")
    print(f"hvp/grad ratio: {ratios.get('C1', float('nan')):.3f}")


if __name__ == "__main__":
    main()
