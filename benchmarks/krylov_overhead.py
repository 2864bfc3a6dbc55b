"""Lanczos' own cost per step, without the Hessian: hesslib beside hessian-eigenthings.

A Lanczos step on a large model is one Hessian product plus the solver's own
work: orthogonalizing the new vector against the whole basis (reading the
basis a few times), and now and then the Ritz pairs and their residuals.
This script times that own work alone, on a diagonal operator whose product
costs almost nothing, with the parameter counts of M1 and C1 and the
benchmark's top-20 basis size.

Run: ``python benchmarks/krylov_overhead.py [--steps 150] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hesslib.hessian import ConvergenceWarning, LinearOperator, lanczos  # noqa: E402

SIZES = {"M1": 431_080, "C1": 1_756_682}  # parameters of the two models
K = 20
SEED = 0


class Diagonal(LinearOperator):
    """``diag(d)``, ``d`` uniform on [0, 1): no eigenvalue converges in a few
    hundred steps, so every step is an ordinary one (no residual checks)."""

    def __init__(self, n: int):
        super().__init__(n, torch.float32, torch.device("cpu"))
        self.d = torch.rand(n, generator=torch.Generator().manual_seed(SEED))

    def _matmat(self, mat: Tensor) -> Tensor:
        return self.d[:, None] * mat


def time_hesslib(op: Diagonal, steps: int) -> float:
    gen = torch.Generator().manual_seed(SEED)
    with warnings.catch_warnings():
        # tol far below float32 reach: the run takes exactly `steps` steps
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        res = lanczos(op, k=K, tol=1e-12, max_iter=steps, generator=gen)
    assert res.num_products == steps, res.num_products
    return time.perf_counter() - start


def time_eigenthings(op: Diagonal, steps: int) -> float | None:
    try:
        import hessian_eigenthings as he
    except ImportError:
        return None
    wrapped = he.LambdaOperator(lambda v: op.d * v, size=op.size, device="cpu",
                                dtype=torch.float32)
    start = time.perf_counter()
    he.lanczos(wrapped, k=K, max_iter=steps, tol=0.0, reorthogonalize=True,
               seed=SEED, which="LA")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    if args.steps < K or args.threads < 1:
        parser.error(f"need --steps >= {K} (a top-{K} basis) and --threads >= 1; "
                     f"got {args.steps} and {args.threads}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; top {K}, "
          f"{args.steps} steps; milliseconds per step (products cost ~0 here)")
    for name, n in SIZES.items():
        op = Diagonal(n)
        ours = time_hesslib(op, args.steps)
        theirs = time_eigenthings(op, args.steps)
        line = f"{name} size ({n:,}): hesslib {ours / args.steps * 1e3:7.1f}"
        if theirs is not None:
            line += f"   hessian-eigenthings {theirs / args.steps * 1e3:7.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
