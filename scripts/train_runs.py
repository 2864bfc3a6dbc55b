"""Train the book's plain runs of a profile into the results store.

    python scripts/train_runs.py --profile cpu                # all models
    python scripts/train_runs.py --profile paper --model C1   # one model
    python scripts/train_runs.py --profile paper --export runs.tar

On several GPUs (or CPU processes), launch it with torchrun; every run is
then trained data parallel and rank 0 writes it into the store:

    torchrun --standalone --nproc_per_node=4 scripts/train_runs.py --profile paper

Pages find these runs in the store and train nothing. On a GPU machine,
train with `--export`, copy the archive, and on the laptop import it with
`python -c "from hesslib.store import Store; Store().import_archive('runs.tar')"`.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from hesslib import distributed as dist_lib
from hesslib.data import DataError
from hesslib.experiments import (
    profile_spec,
    profile_splits,
    resolve_device,
    run_training,
)
from hesslib.models import MODEL_DATA
from hesslib.profiles import get_profile
from hesslib.store import Store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--model", action="append", default=[],
                        help="model name (M1, C1, ...); default all")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--store", default=None, help="default $HESSLIB_STORE")
    parser.add_argument("--export", default=None, help="archive of the runs")
    args = parser.parse_args()
    with dist_lib.process_group(resolve_device(args.device)) as device:
        # the other ranks say only what goes wrong
        level = logging.INFO if dist_lib.is_main() else logging.WARNING
        logging.basicConfig(level=level, format="%(message)s")
        return train_runs(args, device)


def train_runs(args: argparse.Namespace, device: torch.device) -> int:
    profile = get_profile(args.profile)
    store = Store(args.store)
    entries = []
    for model in args.model or list(profile.batch_sizes):
        try:
            splits = profile_splits(profile, MODEL_DATA[model], device=device)
        except DataError as error:
            logging.warning("skipping %s: %s", model, error)
            continue
        for seed in profile.seeds:
            for batch in profile.batch_sizes[model]:
                spec = profile_spec(profile, model, batch,
                                    train_size=len(splits[0]), seed=seed)
                result = run_training(spec, splits=splits, device=device,
                                      store=store, progress=True)
                entries.append(f"run/{result.key}")
                logging.info("%s batch %s seed %d: test accuracy %.4f",
                             model, batch, seed, result.final.test_accuracy)
    if args.export and dist_lib.is_main():
        store.export(args.export, entries)
        logging.info("exported %d runs to %s", len(entries), args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
