"""Does robust training end in a flatter region? M1 on real MNIST, 3 seeds.

For each seed, trains M1 twice from the same initial weights, plainly and
with the authors' robust scheme (a fraction of every chunk replaced by FGSM
examples), then prints the top eigenvalue of the weight Hessian of both on
the same training samples (Lanczos, relative residual 1e-4).

    python scripts/robust_flatness.py                 # defaults below
    python scripts/robust_flatness.py --eps 0.1 --epochs 3
"""

from __future__ import annotations

import argparse
import sys

import torch

from hesslib.analysis import weight_spectrum
from hesslib.data import balanced_subset
from hesslib.experiments import RunSpec, load_splits, run_training
from hesslib.train import TrainConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.005)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--hessian-samples", type=int, default=1_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    splits = load_splits("mnist", args.train_size, 2_000)
    probe = balanced_subset(splits[0], args.hessian_samples, seed=0)
    print(f"M1 on {args.train_size} MNIST images, {args.epochs} epochs, batch "
          f"{args.batch_size}; robust: FGSM eps {args.eps} on a fraction "
          f"{args.fraction} of every chunk; lambda_1 on {args.hessian_samples} "
          "training images")
    print(f"{'seed':>4} {'plain lambda_1':>15} {'robust lambda_1':>16} "
          f"{'plain acc':>10} {'robust acc':>11}  flatter?  residual")
    flatter = []
    for seed in args.seeds:
        row = []
        for robust in ("none", "fgsm_mix"):
            config = TrainConfig(batch_size=args.batch_size, epochs=args.epochs,
                                 seed=seed, robust=robust, robust_eps=args.eps,
                                 robust_fraction=args.fraction)
            spec = RunSpec("M1", args.train_size, 2_000, config)
            result = run_training(spec, splits=splits)
            top = weight_spectrum(result.model, probe.x, probe.y, max_iter=500,
                                  generator=torch.Generator().manual_seed(0))
            row.append((top.eigenvalues[0].item(), top.residuals[0].item(),
                        result.final.test_accuracy))
        (plain, plain_res, plain_acc), (robust_top, robust_res, robust_acc) = row
        flatter.append(robust_top < plain)
        print(f"{seed:>4} {plain:>15.4f} {robust_top:>16.4f} {plain_acc:>10.4f} "
              f"{robust_acc:>11.4f}  {'yes' if flatter[-1] else 'no':>8}  "
              f"{max(plain_res, robust_res):.1e}")
    print(f"robust training flatter for {sum(flatter)} of {len(flatter)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
