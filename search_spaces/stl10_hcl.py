"""HCL's STL-10 grid (Robinson et al. 2021, README): beta x tau_plus at t = 0.5, every configuration to the end.

hard(beta=0, tau_plus=0) is SimCLR and hard(beta=0, tau_plus=0.1) is DCL, so one strategy covers the whole table.
Needs STL-10 in torchvision's layout under --data-root (nothing is downloaded). Differences from the paper: images
are resized to 32 px for training *and* evaluation (HCL evaluates at 96 px), and the linear probe is our fast
full-batch one, not 100 epochs of Adam on augmented images.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces._study import Study

GRID = {"strategy": ("hard",), "beta": (0.0, 0.5, 1.0, 2.0, 6.0), "tau_plus": (0.0, 0.1)}
FIXED: dict[str, Any] = {
    "dataset": "stl10",
    "image_size": 32,
    "encoder": "resnet50",
    "epochs": 400,
    "batch_size": 256,
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "temperature": 0.5,
    "proj_dim": 128,
    "proj_hidden_dim": 512,
}


def space(trial: optuna.Trial) -> dict[str, Any]:
    """Scientific: beta and tau_plus of HCL (a grid). Fixed: everything else, as in HCL's README."""
    for name, values in GRID.items():
        trial.suggest_categorical(name, list(values))
    return dict(FIXED)


STUDY = Study(
    name="stl10_hcl",
    description="HCL's STL-10 grid: beta in {0,0.5,1,2,6} x tau_plus in {0,0.1}, t=0.5, ResNet-50, 400 epochs "
    "(needs --data-root)",
    space=space,
    num_samples=10,
    scheduler="fifo",
    grid=GRID,
)
