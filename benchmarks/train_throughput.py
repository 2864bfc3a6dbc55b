"""Training throughput and results-store overhead on real data.

Prints a table of training throughput (images per second, training steps
only) for M1 on MNIST and C1 on CIFAR-10 at batch sizes 128 and 2048 (the
large batch accumulated in chunks of 128), and the overhead of the results
store: putting and getting a trained C1 run (checksums verified) and writing
one per-epoch checkpoint, against the time of one epoch at the ``cpu``
profile's size.

Usage::

    HESSLIB_DATA=/path/to/data python benchmarks/train_throughput.py [--steps 40]

The data folder is read from ``$HESSLIB_DATA`` (or ``--data``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hesslib.data import balanced_subset, load
from hesslib.experiments import RunSpec, run_training
from hesslib.models import MODEL_DATA, build_model
from hesslib.profiles import get_profile
from hesslib.store import Store, atomic_torch_save
from hesslib.train import TrainConfig, make_optimizer, sgd_step, train

CHUNK = 128
EVAL_SAMPLES = 128  # the per-epoch evaluation is not part of the throughput


def throughput(model_name, splits, batch_size, chunks):
    """Images per second of ``train`` over ``chunks`` chunks of 128 images."""
    train_split, test_split = splits
    n = max(chunks * CHUNK, batch_size)
    subset = balanced_subset(train_split, n, seed=0)
    config = TrainConfig(batch_size=batch_size, chunk_size=CHUNK, epochs=1,
                         grad_norm_samples=EVAL_SAMPLES)
    warm = build_model(model_name, seed=0)
    warm_config = TrainConfig(batch_size=CHUNK, epochs=1,
                              grad_norm_samples=EVAL_SAMPLES)
    train(warm, balanced_subset(train_split, 2 * CHUNK, seed=1), test_split,
          warm_config)  # warm-up: allocator, kernels
    model = build_model(model_name, seed=0)
    record = train(model, subset, test_split, config).history[0]
    return len(subset) / record.seconds, record.steps, len(subset)


def median_seconds(action, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def store_overhead(splits, repeats):
    """Seconds to put and get a C1 run, and to write one checkpoint."""
    train_split, test_split = splits
    spec = RunSpec("C1", 256, EVAL_SAMPLES, TrainConfig(
        batch_size=CHUNK, epochs=1, grad_norm_samples=EVAL_SAMPLES))
    subset = (balanced_subset(train_split, 256, seed=0), test_split)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        start = time.perf_counter()
        trained = run_training(spec, splits=subset, store=store)
        first_call = time.perf_counter() - start
        train_seconds = trained.final.seconds
        get = median_seconds(
            lambda: run_training(spec, splits=subset, store=store), repeats)
        puts = []
        for i in range(repeats):  # a fresh key each time: a real put
            start = time.perf_counter()
            store.put_state_dict("bench", {"i": i}, trained.model)
            store.put_json("bench", {"i": i, "h": 1},
                           [r.to_dict() for r in trained.history])
            puts.append(time.perf_counter() - start)
        model = build_model("C1", seed=0)
        optimizer = make_optimizer(model, spec.config)
        model.train()
        sgd_step(model, optimizer, subset[0].x[:CHUNK], subset[0].y[:CHUNK],
                 spec.config)  # momentum buffers exist, as in a checkpoint
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        path = Path(tmp) / "checkpoint.pt"
        checkpoint = median_seconds(lambda: atomic_torch_save(state, path), repeats)
        size = path.stat().st_size
        weights = sum(p.numel() for p in model.parameters())
    return {
        "put": statistics.median(puts), "get": get, "checkpoint": checkpoint,
        "checkpoint_bytes": size, "parameters": weights,
        "first_call_overhead": first_call - train_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None,
                        help="data folder (default: $HESSLIB_DATA)")
    parser.add_argument("--chunks", type=int, default=64,
                        help="chunks of 128 images per measurement (default 64)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeats of each store timing (median; default 3)")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    cpu = get_profile("cpu")
    rows, epoch_seconds = [], {}
    for model_name in ("M1", "C1"):
        dataset = load(MODEL_DATA[model_name], root=args.data)
        splits = (dataset.train, balanced_subset(dataset.test, EVAL_SAMPLES))
        for batch in (128, 2048):
            rate, steps, n = throughput(model_name, splits, batch, args.chunks)
            rows.append((model_name, batch, n, steps, rate))
            if batch == 128:
                size = cpu.train_size[MODEL_DATA[model_name]]
                epoch_seconds[model_name] = (size, size / rate)
        if model_name == "C1":
            overhead = store_overhead(splits, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print()
    print("| model | batch | images | steps | images/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for model_name, batch, n, steps, rate in rows:
        print(f"| {model_name} | {batch:,} | {n:,} | {steps} | {rate:,.0f} |")
    size, seconds = epoch_seconds["C1"]
    print()
    print(f"C1: {overhead['parameters']:,} parameters, checkpoint "
          f"{overhead['checkpoint_bytes'] / 2**20:.1f} MiB")
    print()
    print("| store operation (C1) | seconds | vs one cpu-profile epoch |")
    print("| --- | ---: | ---: |")
    print(f"| epoch of {size:,} images at batch 128 (estimated) | {seconds:.1f} | 1 |")
    for label, name in (("put a finished run (weights + history)", "put"),
                        ("get a finished run (verify + load + build)", "get"),
                        ("write one checkpoint (atomic, fsync)", "checkpoint")):
        value = overhead[name]
        print(f"| {label} | {value:.3f} | {value / seconds:.2%} |")
    print(f"| first run_training call beyond training (lock, put, eval) | "
          f"{overhead['first_call_overhead']:.3f} | "
          f"{overhead['first_call_overhead'] / seconds:.2%} |")


if __name__ == "__main__":
    main()
