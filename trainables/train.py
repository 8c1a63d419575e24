"""What one trial does: train an encoder under one strategy, score it on the validation split every epoch.

The epoch loop (:func:`run_trial`: scoring, the collapse check, the test split at the end, checkpoints) is shared by
every task; a task supplies a :class:`TaskTrial` from its own module (the image task's is here; ``audio_text``,
``audio_visual`` and ``temporal`` have theirs). This module never imports Ray. The sweep's trainable
(:mod:`trainables.tune_entry`) and ``sweep train`` both call :func:`run_trial` and differ only in what they do with
each epoch's metrics and state.

Determinism: every epoch draws its batches, partners and augmentations from generators seeded by (seed, epoch), so a
trial resumed from the checkpoint of epoch k continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from trainables.accel import Accel
from trainables.augment import make_augment, make_eval_transform
from trainables.config import TaskConfig, TrialConfig, parse_config
from trainables.data import ImageData, check_dataset, load_image_data
from trainables.errors import UserError
from trainables.evaluation import extract_features, knn_accuracy, linear_probe_accuracy
from trainables.files import write_atomic
from trainables.losses import two_view_loss
from trainables.models import ContrastiveModel
from trainables.sampling import POSITIVES, SAMPLERS, LabelIndex, positive_purity, resolve_partner_labels

# Embeddings whose per-dimension spread falls below this fraction of a uniform spread on the sphere have collapsed.
COLLAPSE_STD = 0.02

# Called once per epoch with the metrics and the full trial state; it persists the state and publishes the metrics.
Reporter = Callable[[dict[str, Any], dict[str, Any]], None]


class TaskTrial(Protocol):
    """What the epoch loop needs from a task: one training epoch, scores on a split, and the state to resume."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def train_epoch(self, epoch: int) -> dict[str, Any]: ...  # loss, stop_reason ("" or why to stop), ...

    # "val": the metric and embedding_std; "test": test_*; ``final``: the trial's last epoch (costly scores go there)
    def evaluate(self, split: str, final: bool = True) -> dict[str, float]: ...

    def collapsed(self, metrics: dict[str, Any]) -> bool: ...  # from the validation metrics


@dataclass
class _Trial:
    cfg: TrialConfig
    data: ImageData
    model: ContrastiveModel
    optimizer: torch.optim.Optimizer
    accel: Accel
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    eval_transform: Callable[[torch.Tensor], torch.Tensor]
    noisy_labels: np.ndarray | None

    @property
    def device(self) -> torch.device:
        return self.accel.device

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        return _train_epoch(self, epoch)

    def evaluate(self, split: str, final: bool = True) -> dict[str, float]:
        return _evaluate(self, split)

    def collapsed(self, metrics: dict[str, Any]) -> bool:
        return metrics["embedding_std"] < COLLAPSE_STD


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("`device` is 'cuda' but no CUDA device is visible; use device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def prepare(cfg: Any) -> torch.device:
    """Threads, device and seeds, before anything random is built."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    return resolve_device(cfg.device)


def _build(cfg: TrialConfig) -> _Trial:
    accel = Accel.resolve(prepare(cfg), cfg.precision)
    data = load_image_data(cfg.dataset, cfg.data_root, seed=cfg.seed, image_size=cfg.image_size, limit=cfg.limit)
    channels, size = data.pretrain.x.shape[1], data.pretrain.x.shape[-1]
    model = accel.module(ContrastiveModel.build(
        cfg.encoder, channels, width=cfg.width, hidden_dim=cfg.proj_hidden_dim, out_dim=cfg.proj_dim
    ))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    noisy = fixed_noisy_labels(cfg, data.pretrain.y.numpy(), data.num_classes)
    return _Trial(
        cfg,
        data,
        model,
        optimizer,
        accel,
        make_augment(size, channels, data.mean, data.std),
        make_eval_transform(data.mean, data.std),
        noisy,
    )


def fixed_noisy_labels(cfg: Any, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """The corrupted labels of a `label_source: noisy` trial, drawn once per trial as Wang et al.'s SP70 file."""
    knobs = cfg.part_knobs("positive")
    if knobs.get("label_source") != "noisy":
        return None
    return resolve_partner_labels(
        "noisy", labels, label_accuracy=knobs["label_accuracy"], n_clusters=knobs["n_clusters"],
        rng=np.random.default_rng([cfg.seed, 7]), num_classes=num_classes,
    )


def partner_labels(
    cfg: Any, labels: np.ndarray, epoch: int, noisy: np.ndarray | None, features: Callable[[], np.ndarray],
    num_classes: int,
) -> np.ndarray:
    """The labels that define a soft positive's "same label" this epoch: true, the trial's fixed noisy ones, or
    k-means pseudo-labels of ``features()`` (the current embeddings, refreshed at the start of every epoch)."""
    knobs = cfg.part_knobs("positive")
    source = knobs["label_source"]
    if source == "noisy":
        return noisy
    return resolve_partner_labels(
        source, labels, label_accuracy=knobs["label_accuracy"], n_clusters=knobs["n_clusters"],
        rng=np.random.default_rng([cfg.seed, epoch]), features=features() if source == "pseudo" else None,
        num_classes=num_classes,
    )


def _partner_labels(t: _Trial, epoch: int) -> np.ndarray:
    def features() -> np.ndarray:
        with t.accel.autocast():
            return extract_features(t.model.backbone, t.data.pretrain.x, t.eval_transform, device=t.device).numpy()

    return partner_labels(t.cfg, t.data.pretrain.y.numpy(), epoch, t.noisy_labels, features, t.data.num_classes)


def epoch_result(losses: list[float], weights: list[int]) -> dict[str, Any]:
    """An epoch's metrics: the loss averaged over items (not batches: a last short batch counts less)."""
    return {
        "loss": float(np.average(losses, weights=weights)) if losses else math.nan,
        "stop_reason": "",
        "steps": len(losses),
    }


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """One step on ``loss``; none when it is not finite, so the weights stay finite and the epoch can still be
    scored honestly before the trial stops."""
    if not torch.isfinite(loss):
        return False
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return True


def _train_epoch(t: _Trial, epoch: int) -> dict[str, Any]:
    cfg, spec = t.cfg, t.cfg.strategy_spec
    rng = np.random.default_rng([cfg.seed, epoch])
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    labels = t.data.pretrain.y.numpy()
    batches = SAMPLERS[spec.sampler](labels, cfg.batch_size, rng, **cfg.part_knobs("sampler"))
    pos_knobs = cfg.part_knobs("positive")
    # Grouped once per epoch: soft partners are drawn from the whole dataset, not only the batch.
    partner_labels = LabelIndex(_partner_labels(t, epoch)) if spec.positive == "soft_class" else labels
    pos_args = {"sp_ratio": pos_knobs["sp_ratio"]} if spec.positive == "soft_class" else {}
    t.model.train()
    losses, purities, weights = [], [], []
    for idx in batches:
        partners = POSITIVES[spec.positive](idx, partner_labels, rng, **pos_args)
        x = torch.cat([t.augment(t.data.pretrain.x[idx], gen), t.augment(t.data.pretrain.x[partners], gen)])
        with t.accel.autocast():
            _, z = t.model(t.accel.images(x))
        z1, z2 = z.float().chunk(2)  # the loss in fp32: its log-sum-exps are where precision matters
        loss = two_view_loss(z1, z2, cfg.strategy, cfg.temperature, **cfg.loss_knobs)
        if not optimizer_step(t.optimizer, loss):
            return {"loss": float(loss.detach()), "stop_reason": "non-finite loss"}
        losses.append(loss.item())
        weights.append(len(idx))
        if spec.positive == "soft_class":
            purities.append(positive_purity(idx, partners, labels))
    out: dict[str, Any] = {
        "loss": float(np.average(losses, weights=weights)) if losses else math.nan,
        "stop_reason": "",
        "steps": len(batches),
    }
    if purities:
        out["positive_purity"] = float(np.average(purities, weights=weights))
    return out


def _evaluate(t: _Trial, split: str = "val") -> dict[str, float]:
    """Probe and kNN fitted on the train split, scored on ``split``; the test split's keys get a ``test_`` prefix."""
    cfg, data = t.cfg, t.data
    scored = getattr(data, split)
    with t.accel.autocast():
        train_h = extract_features(t.model.backbone, data.train.x, t.eval_transform, device=t.device)
        h = extract_features(t.model.backbone, scored.x, t.eval_transform, device=t.device)
    out = {
        "linear_acc": linear_probe_accuracy(train_h, data.train.y, h, scored.y, epochs=cfg.probe_epochs, seed=cfg.seed),
        "knn_acc": knn_accuracy(train_h, data.train.y, h, scored.y, k=cfg.knn_k),
    }
    if split != "val":
        return {f"{split}_{k}": v for k, v in out.items()}
    with torch.no_grad():
        t.model.eval()
        z = F.normalize(t.model.head(h.to(t.device)).float(), dim=1).cpu()
    # Spread of the normalised projections relative to a uniform one on the sphere (1.0 ~ uniform, 0 = collapsed).
    out["embedding_std"] = float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))
    return out


def _state(t: TaskTrial, epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "config": t.cfg.to_dict(),
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def _restore(t: TaskTrial, state: Mapping[str, Any]) -> int:
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["epoch"])


def run_trial(
    config: Mapping[str, Any] | TrialConfig, report: Reporter, *, state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Train from scratch or from ``state`` (a dict from a previous report) to ``epochs``; return the last metrics.

    ``report(metrics, state)`` is called once per epoch, after the epoch is scored; ``state`` holds the live
    tensors (no copy per epoch), so the reporter must persist it before it returns. A non-finite loss or collapsed
    embeddings end the trial early with ``stop_reason`` set in its last metrics; they never raise.
    """
    cfg = config if isinstance(config, TaskConfig) else parse_config(config)
    t = _builder(cfg.task)(cfg)
    done = _restore(t, state) if state is not None else 0
    last: dict[str, Any] = {}
    for epoch in range(done + 1, cfg.epochs + 1):
        start = time.perf_counter()
        metrics = t.train_epoch(epoch)
        train_s = time.perf_counter() - start
        final = epoch == cfg.epochs or bool(metrics["stop_reason"])
        if final or epoch % cfg.eval_every == 0:
            metrics.update(t.evaluate("val", final))
            if not metrics["stop_reason"] and t.collapsed(metrics):
                metrics["stop_reason"] = "collapsed embeddings"
        if cfg.evaluate_test and (epoch == cfg.epochs or metrics["stop_reason"]):
            metrics.update(t.evaluate("test"))
        metrics.update(epoch=epoch, time_train_s=train_s, time_eval_s=time.perf_counter() - start - train_s)
        report(metrics, _state(t, epoch))
        last = metrics
        if metrics["stop_reason"]:
            break
    return last


def check_data(cfg: Any) -> None:
    """Fail fast, before a sweep starts, when a trial's data is not where the config says (nothing is loaded)."""
    if cfg.task == "audio_text":
        from trainables.audio_text_data import check_audio_text_dataset

        check_audio_text_dataset(cfg.dataset, cfg.data_root, cfg.word_vectors)
        return
    if cfg.task == "audio_visual":
        from trainables.audio_visual_data import check_audio_visual_dataset

        check_audio_visual_dataset(cfg.dataset, cfg.data_root, cfg.ood_root)
        return
    if cfg.task == "temporal":
        from trainables.temporal_data import check_temporal_dataset

        check_temporal_dataset(cfg.dataset, cfg.data_root, cfg.context_json)
        return
    check_dataset(cfg.dataset, cfg.data_root)


def _builder(task: str) -> Callable[[Any], TaskTrial]:
    """Each task's trial is built by its own module, imported only when that task runs."""
    if task == "audio_text":
        from trainables.audio_text import build

        return build
    if task == "audio_visual":
        from trainables.audio_visual import build as build_av

        return build_av
    if task == "temporal":
        from trainables.temporal import build as build_temporal

        return build_temporal
    return _build


def train(config: Mapping[str, Any], out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one trial without Ray (``sweep train``): metrics to ``metrics.jsonl`` and TensorBoard, state to
    ``checkpoint.pt`` in ``out_dir``, each written atomically; a directory with a checkpoint is resumed."""
    import json
    from pathlib import Path

    from tensorboardX import SummaryWriter

    cfg = parse_config(config)
    if out_dir is None:
        return run_trial(cfg, lambda m, s: log(_epoch_line(m, cfg.epochs, cfg.task)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    state = _read_checkpoint(ckpt) if ckpt.exists() else None
    if state is not None:
        if state["config"] != cfg.to_dict():
            raise UserError(f"{out} holds a checkpoint of a different config; use a new --out directory")
        log(f"resuming from {ckpt} (epoch {state['epoch']})")
    history_path = out / "metrics.jsonl"
    history = _read_history(history_path, state["epoch"] if state else 0) if history_path.exists() else []
    writer = SummaryWriter(str(out))

    def report(metrics: dict[str, Any], trial_state: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and key != "epoch":
                writer.add_scalar(key, value, metrics["epoch"])
        writer.flush()
        history.append(json.dumps(metrics))
        write_atomic(ckpt, lambda f: torch.save(trial_state, f))
        write_atomic(history_path, ("\n".join(history) + "\n").encode())
        log(_epoch_line(metrics, cfg.epochs, cfg.task))

    try:
        return run_trial(cfg, report, state=state)
    finally:
        writer.close()


def _read_checkpoint(path: Any) -> dict[str, Any]:
    """The state `sweep train` saved in ``--out``; a file that is not one is the user's to remove, in one line."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0]}" if str(err) else type(err).__name__
        raise UserError(f"{path} is not a readable checkpoint ({detail}); remove it to start afresh, or use a new "
                        "--out directory") from err
    if not isinstance(state, dict) or not {"config", "epoch", "model", "optimizer", "rng"} <= set(state):
        raise UserError(f"{path} is not a checkpoint of `sweep train`; remove it to start afresh, or use a new --out "
                        "directory")
    return state


def _read_history(path: Any, upto: int) -> list[str]:
    """The lines of ``metrics.jsonl`` up to epoch ``upto`` (those after it are redone on resume)."""
    import json

    kept = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            epoch = json.loads(line)["epoch"]
        except (ValueError, TypeError, KeyError):
            raise UserError(f"{path} line {n} is not a metrics record of `sweep train`; remove the file (the "
                            "checkpoint keeps the trial), or use a new --out directory") from None
        if isinstance(epoch, (int, float)) and epoch <= upto:
            kept.append(line)
    return kept


# The scores `sweep train` prints per epoch, per task (every metric is in metrics.jsonl and TensorBoard).
SHOWN = {
    "image": ("linear_acc", "knn_acc"),
    "audio_text": ("map_mean", "t2a_r1", "a2t_r1"),
    "audio_visual": ("linear_acc", "ood_linear_acc", "finetune_acc", "ood_finetune_acc"),
    "temporal": ("ooo_mean", "ooo_category", "ooo_context", "ooo_object"),
}


def _epoch_line(m: Mapping[str, Any], epochs: int, task: str = "image") -> str:
    shown = SHOWN[task]
    keys = shown + tuple("test_" + k for k in shown)
    scores = "".join(f"  {k} {m[k]:.4f}" for k in keys if k in m)
    line = (
        f"epoch {m['epoch']:>3}/{epochs}  loss {m['loss']:.4f}{scores}  "
        f"({m['time_train_s']:.1f}s train, {m['time_eval_s']:.1f}s eval)"
    )
    return line + (f"  stopped: {m['stop_reason']}" if m.get("stop_reason") else "")
