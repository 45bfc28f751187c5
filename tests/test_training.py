"""The training loop learns, is deterministic, stops on divergence, and augments only training batches."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.lib import training
from pipeline.lib.augment import Augmenter
from pipeline.lib.device import make_deterministic
from pipeline.lib.errors import PipelineError
from pipeline.lib.model import build_model
from pipeline.lib.params import Augment, Params
from pipeline.lib.storage import Dataset
from pipeline.lib.training import TrainingDiverged, evaluate, train

from conftest import small_params, synthetic_digits

NO_AUGMENT = {"rotation_degrees": 0.0, "shift_pixels": 0.0, "scale": 0.0, "elastic_alpha": 0.0}


def dataset(count: int, seed: int) -> Dataset:
    images, labels = synthetic_digits(count, seed)
    rows = torch.from_numpy(images.reshape(count, 784).astype("float32") / 255 - 0.2)
    return Dataset(rows, torch.from_numpy(labels).long())


def run(**train_overrides) -> tuple[torch.nn.Module, object]:
    params = Params.model_validate(small_params(train=train_overrides))
    make_deterministic(params.train.seed)
    model = build_model(params.model)
    result = train(model, dataset(300, 0), dataset(100, 1), params.train, torch.full((784,), -0.2), lambda _: None)
    return model, result


def test_learns_and_keeps_best_validation_epoch():
    model, result = run(epochs=8)
    losses = [epoch.val_loss for epoch in result.history]
    assert result.history[-1].val_accuracy > 0.9
    assert result.kept_epoch == 1 + losses.index(min(losses))
    model.load_state_dict(result.kept_state)
    assert evaluate(model, dataset(100, 1))[0] == pytest.approx(min(losses))


def test_epoch_zero_is_the_untouched_model_and_the_train_curve_a_clean_pass():
    params = Params.model_validate(small_params(train={"epochs": 2}))
    make_deterministic(params.train.seed)
    model, train_data, val_data = build_model(params.model), dataset(300, 0), dataset(100, 1)
    untouched = copy.deepcopy(model)
    result = train(model, train_data, val_data, params.train, torch.full((784,), -0.2), lambda _: None)
    start, last = result.curves[0], result.curves[-1]
    assert (start.epoch, start.batch_loss, start.batch_accuracy) == (0, None, None)
    assert (start.train_loss, start.train_accuracy) == evaluate(untouched, train_data)
    assert (start.val_loss, start.val_accuracy) == evaluate(untouched, val_data)
    assert (last.train_loss, last.train_accuracy) == evaluate(model, train_data)  # eval mode, no augmentation
    assert last.batch_loss != last.train_loss  # the running mean over augmented batches is another measure
    assert [epoch.epoch for epoch in result.curves] == [0, 1, 2]


def test_same_seed_same_weights_other_seed_other_weights():
    first, _ = run(seed=3)
    again, _ = run(seed=3)
    other, _ = run(seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first[0].weight, other[0].weight)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("schedule", ["none", "step", "cosine", "onecycle"])
def test_every_optimizer_and_schedule_trains(optimizer, schedule):
    lr = 0.05 if optimizer == "sgd" else 0.002
    _, result = run(
        epochs=2,
        optimizer={"name": optimizer, "lr": lr, "momentum": 0.9},
        lr_schedule={"name": schedule, "step_size": 1},
    )
    assert result.history[-1].val_accuracy > 0.5


def test_step_schedule_decays_each_step_size_epochs():
    _, result = run(epochs=3, lr_schedule={"name": "step", "step_size": 1, "gamma": 0.5})
    assert [epoch.lr for epoch in result.history] == pytest.approx([0.001, 0.0005, 0.00025])


def test_mse_loss_and_penalties_train():
    _, result = run(epochs=3, loss="mse", l1=1e-5, l2=1e-4, optimizer={"lr": 0.003})
    assert result.history[-1].val_accuracy > 0.8


def test_a_recorded_divergence_ends_training_and_keeps_the_epoch_before_it():
    exploding = {"optimizer": {"name": "sgd", "lr": 1e6}, "on_divergence": "record"}
    params = Params.model_validate(small_params(train=exploding))
    make_deterministic(params.train.seed)
    model = build_model(params.model)
    untouched = copy.deepcopy(model.state_dict())
    result = train(model, dataset(300, 0), dataset(100, 1), params.train, torch.full((784,), -0.2), lambda _: None)
    assert result.diverged.epoch == 1 and result.diverged.step >= 1 and result.history == []
    assert result.kept_epoch == 0  # no epoch ended before the loss blew up: the untouched model is kept
    assert all(torch.equal(untouched[key], value) for key, value in result.kept_state.items())


def test_divergence_stops_with_epoch_step_and_lr():
    with pytest.raises(
        TrainingDiverged, match=r"diverged: loss .* at epoch 1, step \d+ with lr 1e\+06: lower train.optimizer.lr"
    ):
        run(optimizer={"name": "sgd", "lr": 1e6})


def test_keep_last_keeps_the_last_epoch_trained_whatever_its_validation_loss():
    _, best = run(epochs=30, early_stopping_patience=1, optimizer={"lr": 0.05})
    model, last = run(epochs=30, early_stopping_patience=1, optimizer={"lr": 0.05}, keep="last")
    assert [e.val_loss for e in last.history] == [e.val_loss for e in best.history]  # the same training
    assert last.kept_epoch == len(last.history) == best.kept_epoch + 1  # stopped one epoch after the best
    assert all(torch.equal(model.state_dict()[key], value) for key, value in last.kept_state.items())


def test_without_a_validation_set_the_last_epoch_is_kept_and_nothing_is_validated():
    params = Params.model_validate(small_params(split={"val_fraction": 0.0}, train={"epochs": 3, "keep": "last"}))
    make_deterministic(params.train.seed)
    model = build_model(params.model)
    result = train(model, dataset(300, 0), None, params.train, torch.full((784,), -0.2), lambda _: None)
    assert all(epoch.val_loss is None and epoch.val_accuracy is None for epoch in result.curves)
    assert result.kept_epoch == 3 and result.history[-1].train_accuracy > 0.5
    assert all(torch.equal(model.state_dict()[key], value) for key, value in result.kept_state.items())


def test_without_a_validation_set_a_non_finite_training_loss_is_divergence(monkeypatch):
    params = Params.model_validate(small_params(split={"val_fraction": 0.0}, train={"epochs": 1, "keep": "last"}))
    measured = iter([(2.3, 0.1), (float("inf"), 0.1)])  # the training set's clean pass, per epoch
    monkeypatch.setattr(training, "evaluate", lambda *_: next(measured))
    with pytest.raises(TrainingDiverged, match=r"^training diverged: training loss inf at epoch 1 with lr 0.001"):
        train(build_model(params.model), dataset(300, 0), None, params.train, torch.full((784,), -0.2), lambda _: None)


def test_early_stopping_stops_after_patience():
    _, result = run(epochs=30, early_stopping_patience=1, optimizer={"lr": 0.05})
    assert result.stopped_early and len(result.history) < 30
    assert len(result.history) == result.kept_epoch + 1


def augmenter(**changes) -> Augmenter:
    params = Augment.model_validate({**small_params()["train"]["augment"], **NO_AUGMENT, **changes})
    return Augmenter(params, torch.full((784,), -0.5), torch.Generator().manual_seed(0))


def test_augmentation_keeps_black_background_and_moves_the_digit():
    rows = torch.full((8, 784), -0.5)
    rows.view(8, 28, 28)[:, 10:18, 10:18] = 2.0
    for settings in ({"rotation_degrees": 15.0}, {"shift_pixels": 2.0}, {"scale": 0.2}, {"elastic_alpha": 2.0}):
        warped = augmenter(**settings)(rows)
        assert warped.shape == rows.shape
        assert torch.allclose(warped.view(8, 28, 28)[:, 0, :], torch.tensor(-0.5))  # border stays background
        assert not torch.allclose(warped, rows)  # every knob changes images
        assert not torch.allclose(warped[0], warped[1])  # drawn per image


def test_augmentation_off_is_identity():
    rows = torch.randn(4, 784)
    assert torch.allclose(augmenter()(rows), rows, atol=1e-5)


def test_shift_stays_within_its_range():
    rows = torch.full((200, 784), -0.5)
    rows.view(200, 28, 28)[:, 14, 14] = 10.0
    warped = augmenter(shift_pixels=2.0)(rows).view(200, 28, 28) + 0.5
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre_y = (warped * ys).sum((1, 2)) / warped.sum((1, 2))
    centre_x = (warped * xs).sum((1, 2)) / warped.sum((1, 2))
    for centre in (centre_y, centre_x):
        assert (centre - 14).abs().max() <= 2.0 + 1e-4
        assert (centre - 14).abs().max() > 1.5  # the range is used, not just a sliver


def weight_norm(model) -> float:
    return sum(m.weight.pow(2).sum().item() for m in model if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize(
    "penalty", [{"l2": 0.01}, {"l1": 0.001}, {"optimizer": {"name": "adamw", "weight_decay": 50.0}}]
)
def test_penalties_shrink_the_weights(penalty):
    plain, _ = run(epochs=3)
    penalized, _ = run(epochs=3, **penalty)
    assert weight_norm(penalized) < 0.8 * weight_norm(plain)


def momentum_seen(optimizer: dict, cycle_momentum: bool) -> list[float]:
    """The momentum (Adam: beta1) that each of 20 onecycle steps runs with."""
    schedule = {"name": "onecycle", "cycle_momentum": cycle_momentum}
    params = Params.model_validate(small_params(train={"epochs": 2, "optimizer": optimizer, "lr_schedule": schedule}))
    optimizer = training.make_optimizer(build_model(params.model), params.train)
    scheduler = training.make_schedule(optimizer, params.train, steps_per_epoch=10)
    seen = []
    for _ in range(20):
        group = optimizer.param_groups[0]
        seen.append(group["betas"][0] if "betas" in group else group["momentum"])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("optimizer", [{"name": "adam", "lr": 0.002}, {"name": "sgd", "lr": 0.05, "momentum": 0.5}])
def test_onecycle_keeps_the_momentum_of_params_unless_told_to_cycle_it(optimizer):
    configured = optimizer.get("momentum", 0.9)  # Adam's beta1 is torch's default 0.9
    assert set(momentum_seen(optimizer, cycle_momentum=False)) == {configured}
    cycled = momentum_seen(optimizer, cycle_momentum=True)
    assert max(cycled) == pytest.approx(0.95, abs=1e-3) and min(cycled) < 0.86  # 0.95 -> 0.85 -> 0.95


def test_rmsprop_takes_its_smoothing_from_params():
    """Keras' RMSprop (rho 0.9) is torch's with alpha 0.9: check the first step's size."""
    keras = {"name": "rmsprop", "lr": 0.001, "alpha": 0.9}
    params = Params.model_validate(small_params(train={"optimizer": keras}))
    model = build_model(params.model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = training.make_optimizer(model, params.train)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 2.0)
    optimizer.step()
    expected = 0.001 * 2.0 / ((0.1 * 2.0**2) ** 0.5 + 1e-8)  # lr * g / (sqrt((1 - alpha) * g^2) + torch's eps)
    for old, new in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(old - new.detach(), torch.full_like(old, expected))


def test_non_finite_validation_data_is_named_before_any_update():
    params = Params.model_validate(small_params(train={"epochs": 1}))
    broken = dataset(100, 1)
    broken.inputs[0, 0] = float("nan")
    with pytest.raises(
        PipelineError, match=r"^validation loss is nan before any update: .* rerun preprocess and split$"
    ):
        train(
            build_model(params.model), dataset(300, 0), broken, params.train, torch.full((784,), -0.2), lambda _: None
        )


def test_non_finite_validation_loss_after_an_epoch_stops_with_one_line(monkeypatch):
    params = Params.model_validate(small_params(train={"epochs": 1}))
    measured = iter([(2.3, 0.1), (2.3, 0.1), (float("nan"), 0.1), (2.3, 0.1)])  # val, train per epoch
    monkeypatch.setattr(training, "evaluate", lambda *_: next(measured))
    with pytest.raises(
        TrainingDiverged, match=r"^training diverged: validation loss nan at epoch 1 with lr 0.001: lower"
    ):
        train(
            build_model(params.model),
            dataset(300, 0),
            dataset(100, 1),
            params.train,
            torch.full((784,), -0.2),
            lambda _: None,
        )


def test_cosine_and_onecycle_shapes():
    _, cosine = run(epochs=4, lr_schedule={"name": "cosine"})
    rates = [epoch.lr for epoch in cosine.history]
    assert rates[0] == pytest.approx(0.001) and rates == sorted(rates, reverse=True) and rates[-1] < 0.0005
    _, onecycle = run(epochs=4, lr_schedule={"name": "onecycle"})
    rates = [epoch.lr for epoch in onecycle.history]
    assert rates[0] < 0.0002 and max(rates) > 0.0005  # warms up towards lr, then anneals


def test_gemm_grid_equals_affine_grid():
    """The fast grid is the same sampling grid that F.affine_grid makes from the same transforms."""
    import torch.nn.functional as F

    sampler = augmenter(rotation_degrees=10.0, shift_pixels=2.0, scale=0.1)
    transforms = sampler.draw_affine(16, torch.device("cpu"))
    rows = torch.randn(16, 784)
    expected = (
        F.grid_sample(
            (rows + 0.5).reshape(16, 1, 28, 28),
            F.affine_grid(transforms, [16, 1, 28, 28], align_corners=False),
            align_corners=False,
        ).reshape(16, 784)
        - 0.5
    )
    assert torch.allclose(sampler.warp(rows, transforms), expected, atol=1e-5)


def test_rotations_are_uniform_over_the_range():
    transforms = augmenter(rotation_degrees=5.0).draw_affine(20000, torch.device("cpu"))
    degrees = torch.rad2deg(torch.atan2(transforms[:, 1, 0], transforms[:, 0, 0]))
    assert degrees.abs().max() <= 5.0 and degrees.abs().max() > 4.99
    assert torch.histc(degrees, bins=10, min=-5, max=5).min() > 1800  # ~2,000 per bin when uniform


def test_penalties_cover_the_convolutions_and_skip_biases():
    network = build_model(
        Params.model_validate(small_params(model={"architecture": "cnn", "hidden_sizes": [20]})).model
    )
    weights = [m.weight for m in network if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weights) == 4
    expected = sum(0.1 * w.abs().sum() + 0.01 * w.pow(2).sum() for w in weights)
    assert training.weight_penalty(network, 0.1, 0.01).item() == pytest.approx(expected.item(), rel=1e-6)
    assert training.weight_penalty(network, 0.0, 0.0) == 0.0
