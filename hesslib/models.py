"""The paper's model zoo, built by name.

| name | data     | architecture                                            |
|------|----------|---------------------------------------------------------|
| M1   | MNIST    | LeNet-5 style: conv5-20, pool, conv5-50, pool, FC 500   |
| C1   | CIFAR-10 | two conv5-64 + BN + maxpool(3, 2, pad 1), FC 384, 192   |
| C2   | CIFAR-10 | four conv3 (64, 64, 128, 128) + BN, two pools, FC 256x2 |
| C3   | CIFAR-10 | ResNet-20 (16/32/64 channels, basic blocks)             |
| C4   | CIFAR-100| C2 with 100 outputs                                     |

Every model takes images in [0, 1] and normalizes them itself, so attacks
and Hessians with respect to the input see the pixel scale. Every
activation is ReLU and every pooling max-pooling by default (what the
paper's Theorem 1 needs); ``activation="tanh"`` or ``"gelu"`` builds the
smooth twin used to show where the theorem stops holding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "MODELS",
    "MODEL_DATA",
    "Normalize",
    "build_model",
    "count_parameters",
]

Activation = Literal["relu", "tanh", "gelu"]

# Per-channel statistics of the training splits (see ../shared/data/SOURCES.md).
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

MODEL_DATA = {"M1": "mnist", "C1": "cifar10", "C2": "cifar10", "C3": "cifar10",
              "C4": "cifar100"}


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Normalize images of shape (N, C, H, W)."""
        return (x - self.mean) / self.std


def _act(kind: Activation) -> nn.Module:
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[kind]()


def _m1(classes: int, act: Activation) -> nn.Sequential:
    return nn.Sequential(
        Normalize(*_STATS["mnist"]),
        nn.Conv2d(1, 20, 5), _act(act), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), _act(act), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * 4 * 4, 500), _act(act),
        nn.Linear(500, classes),
    )


def _c1(classes: int, act: Activation) -> nn.Sequential:
    return nn.Sequential(
        Normalize(*_STATS["cifar10"]),
        nn.Conv2d(3, 64, 5, padding=2), _act(act), nn.BatchNorm2d(64),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(64, 64, 5, padding=2), _act(act), nn.BatchNorm2d(64),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 384), _act(act),
        nn.Linear(384, 192), _act(act),
        nn.Linear(192, classes),
    )


def _c2(classes: int, act: Activation, stats: str = "cifar10") -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3), _act(act), nn.BatchNorm2d(cout)]

    return nn.Sequential(
        Normalize(*_STATS[stats]),
        *block(3, 64), *block(64, 64), nn.MaxPool2d(2),
        *block(64, 128), *block(128, 128), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 5 * 5, 256), _act(act),
        nn.Linear(256, 256), _act(act),
        nn.Linear(256, classes),
    )


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity or 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, act: Activation):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act1, self.act2 = _act(act), _act(act)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Map (N, cin, H, W) to (N, cout, H / stride, W / stride)."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _c3(classes: int, act: Activation, blocks_per_stage: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = [
        Normalize(*_STATS["cifar10"]),
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), _act(act),
    ]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(_BasicBlock(cin, cout, stride, act))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def _c4(classes: int, act: Activation) -> nn.Sequential:
    return _c2(classes, act, stats="cifar100")


MODELS: dict[str, Callable[[int, Activation], nn.Module]] = {
    "M1": _m1, "C1": _c1, "C2": _c2, "C3": _c3, "C4": _c4,
}
_DEFAULT_CLASSES = {"M1": 10, "C1": 10, "C2": 10, "C3": 10, "C4": 100}


def build_model(
    name: str,
    *,
    seed: int | None = None,
    activation: Activation = "relu",
    num_classes: int | None = None,
) -> nn.Module:
    """Build one of the paper's models by name.

    Args:
        name: ``"M1"``, ``"C1"``, ``"C2"``, ``"C3"`` or ``"C4"``.
        seed: Seed of the initial weights; the global random state is left
            untouched. ``None`` draws from the global state.
        activation: ``"relu"`` (the paper) or a smooth twin.
        num_classes: Output size; defaults to the model's data set.

    Returns:
        The model in train mode, on the CPU, in float32.

    Example:
        >>> model = build_model("M1", seed=0)
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])

    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    if activation not in ("relu", "tanh", "gelu"):
        raise ValueError(
            f"unknown activation {activation!r}; use 'relu', 'tanh' or 'gelu'"
        )
    classes = num_classes or _DEFAULT_CLASSES[name]
    if seed is None:
        return MODELS[name](classes, activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](classes, activation)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
