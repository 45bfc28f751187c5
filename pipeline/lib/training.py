"""The training loop, `train`: tensors in memory, one optimizer step per batch, a clean pass over the
training and validation sets every epoch.

No DataLoader and no per-sample transforms: each epoch shuffles index tensors, slices batches, and
augments whole batches on the training device. The helpers above `train` build its pieces.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.lib.augment import Augmenter
from pipeline.lib.backprop import loss_and_gradients
from pipeline.lib.errors import PipelineError
from pipeline.lib.model import weighted_layers
from pipeline.lib.params import Train
from pipeline.lib.storage import Dataset

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
    """Fused implementations (one kernel for all parameters) where PyTorch has them: small batches
    are bound by kernel launches."""
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


def epoch_result(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None,
    loss_name: str,
    epoch: int,
    lr: float,
    started: float,
    batches: tuple[float, float] | None = None,
) -> EpochResult:
    """Where training stands after `epoch` epochs: a clean pass over both sets, and `batches`, the mean
    loss and accuracy of the epoch's batches as trained on. A non-finite loss before any update is bad
    data, after one divergence."""
    val_loss, val_accuracy = evaluate(model, val_data, loss_name) if val_data is not None else (None, None)
    train_loss, train_accuracy = evaluate(model, train_data, loss_name)
    name, watched = ("training", train_loss) if val_loss is None else ("validation", val_loss)
    if not math.isfinite(watched):
        if epoch == 0:
            raise PipelineError(
                f"{name} loss is {watched} before any update: the {name} arrays hold non-finite values; "
                "rerun preprocess and split"
            )
        raise TrainingDiverged(
            f"training diverged: {name} loss {watched} at epoch {epoch} with lr {lr:g}: lower train.optimizer.lr",
            Divergence(epoch, None, watched),
        )
    batch_loss, batch_accuracy = batches or (None, None)
    seconds = time.perf_counter() - started
    return EpochResult(
        epoch, train_loss, train_accuracy, val_loss, val_accuracy, batch_loss, batch_accuracy, lr, seconds
    )


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
    device, n, batch_size = train_data.inputs.device, len(train_data.labels), params.batch_size
    generator = torch.Generator(device=device).manual_seed(params.seed)
    augmenter = Augmenter(params.augment, background.to(device), generator) if params.augment.enabled else None
    optimizer = make_optimizer(model, params)
    scheduler = make_schedule(optimizer, params, steps_per_epoch=-(-n // batch_size))
    criterion = loss_function(params.loss)

    initial = epoch_result(
        model, train_data, val_data, params.loss, 0, optimizer.param_groups[0]["lr"], time.perf_counter()
    )
    on_epoch(initial)
    result = TrainResult(kept_epoch=0, kept_state=copy.deepcopy(model.state_dict()), initial=initial)
    best_loss, epochs_without_gain = math.inf, 0
    try:
        for epoch in range(1, params.epochs + 1):
            started, epoch_lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
            model.train()
            # One gather per batch instead of a shuffled copy of the whole set; predictions kept for
            # one accuracy count per epoch, so the loss value is the step's only host sync.
            order = torch.randperm(n, device=device, generator=generator)
            shuffled_labels = train_data.labels[order]
            predictions = torch.empty_like(shuffled_labels)
            loss_sum = 0.0
            for step, start in enumerate(range(0, n, batch_size), start=1):
                batch = train_data.inputs[order[start : start + batch_size]]
                labels = shuffled_labels[start : start + batch_size]
                if augmenter is not None:
                    batch = augmenter(batch)
                optimizer.zero_grad(set_to_none=True)
                if params.backward == "manual":  # the textbook backward pass (backprop.py); no penalties
                    loss, logits = loss_and_gradients(model, batch, labels)
                else:
                    logits = model(batch)
                    loss = criterion(logits, labels)
                    (loss + weight_penalty(model, params.l1, params.l2)).backward()
                value = loss.item()
                if not math.isfinite(value) or value > EXPLODED_LOSS:  # stop before the weights change
                    raise TrainingDiverged(
                        f"training diverged: loss {value:.3g} at epoch {epoch}, step {step} with lr "
                        f"{optimizer.param_groups[0]['lr']:g}: lower train.optimizer.lr",
                        Divergence(epoch, step, value),
                    )
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += value * len(labels)
                torch.argmax(logits.detach(), 1, out=predictions[start : start + batch_size])

            batches = (loss_sum / n, (predictions == shuffled_labels).float().mean().item())
            outcome = epoch_result(model, train_data, val_data, params.loss, epoch, epoch_lr, started, batches)
            on_epoch(outcome)
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
