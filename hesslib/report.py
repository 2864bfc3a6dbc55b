"""Tables generated from code: the models' architectures and the profiles.

The paper lists its architectures and training settings in tables; the book
makes them from the objects themselves, so that a table cannot drift from
what was run. :func:`architecture_rows` walks a built model's top-level
layers (their output shapes from one forward pass, their parameter counts);
:func:`model_rows` summarizes the zoo; :func:`training_rows` lists each
model's training settings in a profile. Every function returns rows (one
mapping per row, sharing their keys) for :func:`hesslib.book.markdown_table`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from hesslib.models import MODEL_DATA, build_model, count_parameters
from hesslib.profiles import Profile
from hesslib.train import TrainConfig

__all__ = ["INPUT_SHAPES", "architecture_rows", "model_rows", "training_rows"]

INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}
"""Shape of one image, (C, H, W), per data set."""


def _describe(module: nn.Module) -> str:
    """A leaf as its type and arguments; a block as a count of its leaves."""
    leaves = [m for m in module.modules() if not list(m.children())]
    if leaves == [module]:
        extra = module.extra_repr()
        return f"{type(module).__name__}({extra})" if extra else type(module).__name__
    counts = Counter(type(m).__name__ for m in leaves)
    parts = [f"{name} x{n}" if n > 1 else name for name, n in counts.items()]
    return f"{type(module).__name__.lstrip('_')}: " + ", ".join(parts)


def architecture_rows(
    model: nn.Module, input_shape: Sequence[int]
) -> list[dict[str, str | int]]:
    """One row per top-level layer of ``model``: what it is, its output shape.

    The model is run once, in eval mode on a zero batch of one sample (its
    mode is restored), to record each layer's output shape with forward
    hooks.

    Args:
        model: A model whose top-level children run in sequence (an
            ``nn.Sequential``, as every model of :mod:`hesslib.models`).
        input_shape: Shape of one input without the batch, e.g. ``(1, 28, 28)``.

    Returns:
        Rows with ``layer`` (index), ``module``, ``output shape`` and
        ``parameters`` (trainable, of that layer).

    Raises:
        ValueError: ``model`` has no child layers.

    Example:
        >>> rows = architecture_rows(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)),
        ...                          (1, 2, 2))
        >>> [(r["output shape"], r["parameters"]) for r in rows]
        [('4', 0), ('2', 10)]

    """
    children = list(model.named_children())
    if not children:
        raise ValueError(
            f"{type(model).__name__} has no child layers; pass a model built of "
            "layers, e.g. an nn.Sequential"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [child.register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name, child in children]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        for module, mode in was_training:
            module.train(mode)
    return [{"layer": index, "module": _describe(child),
             "output shape": " x ".join(map(str, shapes.get(name, ()))),
             "parameters": count_parameters(child)}
            for index, (name, child) in enumerate(children)]


def model_rows(names: Iterable[str]) -> list[dict[str, str | int]]:
    """One row per model of the zoo: data set, layers, parameters.

    Example:
        >>> model_rows(["M1"])[0]["parameters"]
        431080

    """
    rows = []
    for name in names:
        model = build_model(name, seed=0)
        leaves = [m for m in model.modules() if not list(m.children())]
        kinds = Counter(type(m).__name__ for m in leaves)
        rows.append({
            "model": name, "data set": MODEL_DATA[name],
            "convolutions": kinds["Conv2d"], "linear layers": kinds["Linear"],
            "BatchNorm layers": kinds["BatchNorm2d"],
            "parameters": count_parameters(model),
        })
    return rows


def training_rows(
    profile: Profile, models: Iterable[str]
) -> list[dict[str, str | int | float]]:
    """The training settings of each model in ``profile``.

    Batch sizes are as the profile lists them (``"all"``: the whole
    training subset); the optimizer settings are
    :class:`~hesslib.train.TrainConfig`'s defaults, which the book keeps.

    Example:
        >>> from hesslib.profiles import get_profile
        >>> training_rows(get_profile("smoke"), ["M1"])[0]["epochs"]
        2

    """
    config = TrainConfig()
    rows = []
    for name in models:
        if name not in profile.batch_sizes:
            raise ValueError(
                f"profile {profile.name!r} has no batch sizes for model {name!r}; "
                f"choose among {sorted(profile.batch_sizes)}"
            )
        data = MODEL_DATA[name]
        rows.append({
            "model": name,
            "training samples": _size(profile.train_size[data]),
            "test samples": _size(profile.test_size[data]),
            "batch sizes": ", ".join(str(b) for b in profile.batch_sizes[name]),
            "epochs": profile.epochs,
            "lr": config.lr,
            "momentum": config.momentum,
            "lr schedule": f"x{config.lr_decay:g} every {config.lr_decay_every} "
                           "epochs",
            "lr scaling": profile.lr_scaling,
            "Hessian samples": _size(profile.hessian_samples[name]),
        })
    return rows


def _size(n: int | None) -> str:
    return "all" if n is None else f"{n:,}"
