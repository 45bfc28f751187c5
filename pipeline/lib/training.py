"""The training loop: tensors in memory, one optimizer step per batch, validation every epoch.

No DataLoader and no per-sample transforms: each epoch shuffles index
tensors, slices batches, and augments whole batches on the training device.
Each batch is zero_grad, the step (forward, loss, backward), optimizer step, in `_train_epoch`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.lib.augment import Augmenter
from pipeline.lib.backprop import loss_and_gradients
from pipeline.lib.errors import PipelineError
from pipeline.lib.model import weighted_layers
from pipeline.lib.params import Train
from pipeline.lib.storage import read_pair

EVAL_BATCH = 4096
# Cross-entropy starts near ln(10) = 2.3 and MSE here is at most 2: a batch loss above this
# has exploded even while still finite (Adam at lr 1 reaches ~3e5 and ends at chance).
EXPLODED_LOSS = 1e4


@dataclass(frozen=True)
class Divergence:
    """Where training diverged: the epoch, the step (None: the validation loss after the epoch) and the loss."""

    epoch: int
    step: int | None
    loss: float


class TrainingDiverged(PipelineError):
    """The loss became NaN or infinite, or exploded past EXPLODED_LOSS."""

    def __init__(self, message: str, where: Divergence) -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Dataset:
    """Standardized rows (N, 784) float32 and labels (N,) int64, on one device."""

    inputs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def load(cls, folder: Path, name: str, device: torch.device) -> Dataset:
        """The `name` pair of arrays that the split stage wrote, as tensors on `device`."""
        images, labels = read_pair(folder, name)
        # torch.tensor copies into torch's own 64-byte-aligned memory: NumPy's buffers are only
        # 16-byte aligned, and a BLAS may take another code path for another alignment.
        return cls(torch.tensor(images, device=device), torch.tensor(labels, dtype=torch.long, device=device))


@dataclass(frozen=True)
class EpochResult:
    """Where training stands after `epoch` epochs (0: before any update).

    train_* come from a clean pass over the training set (eval mode, no augmentation), so the gap
    to val_* measures overfitting fairly (None without a validation set); batch_* are the running
    averages over the epoch's augmented batches as trained on (None at epoch 0, before any batch).
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    batch_loss: float | None
    batch_accuracy: float | None
    lr: float
    seconds: float


@dataclass
class TrainResult:
    kept_epoch: int  # train.keep's choice: the lowest validation loss, or the last epoch
    kept_state: dict[str, torch.Tensor]
    initial: EpochResult  # epoch 0, before any update
    history: list[EpochResult] = field(default_factory=list)  # epochs 1, 2, ...
    stopped_early: bool = False
    diverged: Divergence | None = None  # train.on_divergence: record

    @property
    def curves(self) -> list[EpochResult]:
        return [self.initial, *self.history]


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "cross_entropy":
        return F.cross_entropy

    def mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Squared error of the softmax against one-hot targets, summed over classes."""
        targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return (logits.softmax(1) - targets).pow(2).sum(1).mean()

    return mse


def weight_penalty(model: nn.Module, l1: float, l2: float) -> torch.Tensor | float:
    """L1 and L2 penalties on Linear and Conv2d weights (biases and batch-norm scales are not
    penalized); 0 when both are off, so the plain loss's graph is unchanged."""
    if l1 == 0 and l2 == 0:
        return 0.0
    weights = [layer.weight for layer in weighted_layers(model)]
    return sum(l1 * w.abs().sum() + l2 * w.pow(2).sum() for w in weights)


def make_optimizer(model: nn.Module, params: Train) -> torch.optim.Optimizer:
    """Fused implementations (one kernel for all parameters) where PyTorch has them: ~15% faster at batch 64."""
    config = params.optimizer
    common = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.name != "rmsprop":
        common["fused"] = True
    if config.name == "sgd":
        return torch.optim.SGD(model.parameters(), momentum=config.momentum, nesterov=config.nesterov, **common)
    if config.name == "rmsprop":
        return torch.optim.RMSprop(
            model.parameters(), alpha=config.alpha, momentum=config.momentum, foreach=True, **common
        )
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.name](model.parameters(), **common)


def make_schedule(optimizer: torch.optim.Optimizer, params: Train, steps_per_epoch: int):
    """A per-step LR scheduler, or None. `step` decays every step_size epochs."""
    schedule, total = params.lr_schedule, params.epochs * steps_per_epoch
    if schedule.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, schedule.step_size * steps_per_epoch, schedule.gamma)
    if schedule.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    if schedule.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, params.optimizer.lr, total_steps=total, cycle_momentum=schedule.cycle_momentum
        )
    return None


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset, loss_name: str = "cross_entropy") -> tuple[float, float]:
    """Mean loss and accuracy over a dataset, in eval mode, in large batches."""
    model.eval()
    criterion = loss_function(loss_name)
    total_loss = torch.zeros((), device=data.inputs.device)
    correct = torch.zeros((), dtype=torch.long, device=data.inputs.device)
    for start in range(0, len(data.labels), EVAL_BATCH):
        logits = model(data.inputs[start : start + EVAL_BATCH])
        labels = data.labels[start : start + EVAL_BATCH]
        total_loss += criterion(logits, labels) * len(labels)
        correct += (logits.argmax(1) == labels).sum()
    n = len(data.labels)
    return total_loss.item() / n, correct.item() / n


@dataclass(frozen=True)
class Measurement:
    """Loss and accuracy of a clean pass (eval mode, no augmentation) over the training and validation
    sets; val_* are None without a validation set."""

    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None

    @property
    def watched(self) -> tuple[str, float]:
        """The loss that tells bad data and divergence: the validation set's, else the training set's."""
        return ("training", self.train_loss) if self.val_loss is None else ("validation", self.val_loss)


def measure(model: nn.Module, train_data: Dataset, val_data: Dataset | None, loss_name: str) -> Measurement:
    """Where the model stands: a pure function of its weights and the data."""
    val_loss, val_accuracy = evaluate(model, val_data, loss_name) if val_data is not None else (None, None)
    train_loss, train_accuracy = evaluate(model, train_data, loss_name)
    return Measurement(
        train_loss=train_loss, train_accuracy=train_accuracy, val_loss=val_loss, val_accuracy=val_accuracy
    )


def check_measured_loss(measured: Measurement, epoch: int, lr: float) -> None:
    """A non-finite clean-pass loss before any update is bad data; after one, divergence."""
    name, loss = measured.watched
    if math.isfinite(loss):
        return
    if epoch == 0:
        raise PipelineError(
            f"{name} loss is {loss} before any update: the {name} arrays hold "
            "non-finite values; rerun preprocess and split"
        )
    raise TrainingDiverged(
        f"training diverged: {name} loss {loss} at epoch {epoch} with lr {lr:g}: lower train.optimizer.lr",
        Divergence(epoch, None, loss),
    )


Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_step(model: nn.Module, params: Train) -> Step:
    """The backward pass `params.backward` names, chosen once: (batch, labels) -> (loss, logits)
    with the gradients in place. Penalties are autograd's only (params.py refuses them with manual)."""
    if params.backward == "manual":
        return lambda batch, labels: loss_and_gradients(model, batch, labels)
    criterion = loss_function(params.loss)

    def autograd_step(batch: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch)
        loss = criterion(logits, labels)
        (loss + weight_penalty(model, params.l1, params.l2)).backward()
        return loss, logits

    return autograd_step


@dataclass
class Loop:
    """What one epoch of training needs, built once per run."""

    model: nn.Module
    data: Dataset
    batch_size: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    augmenter: Augmenter | None
    generator: torch.Generator
    step: Step

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def train(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None,
    params: Train,
    background: torch.Tensor,
    on_epoch: Callable[[EpochResult], None],
) -> TrainResult:
    """Train for params.epochs (or until early stopping); keep the weights of the lowest validation loss,
    or of the last epoch (train.keep; always the last without a validation set, `val_data` None).

    Loss, not accuracy: on 6,000 validation images accuracy moves in steps of one image (0.017
    points), so two epochs often tie on it, and noise, not the model, would pick between them.

    `background` is the standardized value of a black pixel, what augmentation shifts in.
    `on_epoch` sees epoch 0 (the untouched model, as the Keras lecture shows it; docs/sources.md)
    and then every epoch.
    """
    device = train_data.inputs.device
    generator = torch.Generator(device=device).manual_seed(params.seed)
    augmenter = Augmenter(params.augment, background.to(device), generator) if params.augment.enabled else None
    optimizer = make_optimizer(model, params)
    steps_per_epoch = -(-len(train_data.labels) // params.batch_size)
    loop = Loop(
        model=model,
        data=train_data,
        batch_size=params.batch_size,
        optimizer=optimizer,
        scheduler=make_schedule(optimizer, params, steps_per_epoch),
        augmenter=augmenter,
        generator=generator,
        step=make_step(model, params),
    )

    def finished(epoch: int, lr: float, started: float, batch_loss: float | None, batch_accuracy: float | None):
        measured = measure(model, train_data, val_data, params.loss)
        check_measured_loss(measured, epoch, lr)
        outcome = EpochResult(
            epoch=epoch,
            **vars(measured),
            batch_loss=batch_loss,
            batch_accuracy=batch_accuracy,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        on_epoch(outcome)
        return outcome

    initial = finished(0, loop.lr, time.perf_counter(), None, None)
    result = TrainResult(kept_epoch=0, kept_state=copy.deepcopy(model.state_dict()), initial=initial)
    best_loss, epochs_without_gain = math.inf, 0
    try:
        for epoch in range(1, params.epochs + 1):
            started, lr = time.perf_counter(), loop.lr
            model.train()
            batch_loss, batch_accuracy = _train_epoch(loop, epoch)
            outcome = finished(epoch, lr, started, batch_loss, batch_accuracy)
            result.history.append(outcome)
            improved = outcome.val_loss is not None and outcome.val_loss < best_loss
            best_loss, epochs_without_gain = (outcome.val_loss, 0) if improved else (best_loss, epochs_without_gain + 1)
            if improved or params.keep == "last":
                result.kept_epoch, result.kept_state = epoch, copy.deepcopy(model.state_dict())
            if params.early_stopping_patience is not None and epochs_without_gain >= params.early_stopping_patience:
                result.stopped_early = True
                break
    except TrainingDiverged as diverged:
        if params.on_divergence == "stop":
            raise
        result.diverged = diverged.where  # the kept epoch stays the model: the last one before, or epoch 0
    return result


def _train_epoch(loop: Loop, epoch: int) -> tuple[float, float]:
    """One pass over shuffled batches; returns (mean loss, accuracy) over the batches as trained on.

    The hot loop: one gather per batch instead of a shuffled copy of the whole set, one host
    sync per step (the loss value, needed to stop on divergence before the weights change),
    and predictions stored for one accuracy count per epoch.
    """
    data, batch_size = loop.data, loop.batch_size
    n = len(data.labels)
    order = torch.randperm(n, device=data.inputs.device, generator=loop.generator)
    shuffled_labels = data.labels[order]
    predictions = torch.empty_like(shuffled_labels)
    loss_sum = 0.0
    for step, start in enumerate(range(0, n, batch_size), start=1):
        batch = data.inputs[order[start : start + batch_size]]
        labels = shuffled_labels[start : start + batch_size]
        if loop.augmenter is not None:
            batch = loop.augmenter(batch)
        loop.optimizer.zero_grad(set_to_none=True)
        loss, logits = loop.step(batch, labels)
        value = loss.item()
        if not math.isfinite(value) or value > EXPLODED_LOSS:
            raise TrainingDiverged(
                f"training diverged: loss {value:.3g} at epoch {epoch}, step {step} with lr {loop.lr:g}: "
                "lower train.optimizer.lr",
                Divergence(epoch, step, value),
            )
        loop.optimizer.step()
        if loop.scheduler is not None:
            loop.scheduler.step()
        loss_sum += value * len(labels)
        torch.argmax(logits.detach(), 1, out=predictions[start : start + batch_size])
    return loss_sum / n, (predictions == shuffled_labels).float().mean().item()
