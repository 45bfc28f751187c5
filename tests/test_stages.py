"""Every stage as its Click command, chained on tiny synthetic data, and its one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.lib.mnist import OFFICIAL_FILES
from pipeline.lib.model import probabilities
from pipeline.lib.model_file import load_model
from pipeline.stages import download, evaluate, preprocess, split, train

from conftest import pipeline_steps, run_pipeline, small_params, write_params


def test_a_training_subset_is_also_scored_on_the_images_it_left_out(tmp_path, raw_dir, run_stage):
    """The training pool is every image the split left for training, the subset's and the rest."""
    params_file = write_params(tmp_path / "params.yaml", small_params(split={"train_subset": 100}))
    paths = run_pipeline(run_stage, params_file, raw_dir, tmp_path)

    counts = json.loads(paths["counts"].read_text())
    assert (counts["train"]["total"], counts["val"]["total"], counts["left_out"]["total"]) == (100, 40, 260)
    left_out_labels = np.load(paths["split"] / "left_out_labels.npy")
    assert len(left_out_labels) == 260 and np.bincount(left_out_labels, minlength=10).tolist() == list(
        counts["left_out"]["per_class"].values()
    )
    network = load_model(paths["model"]).network
    left_out_probs = probabilities(network, np.load(paths["split"] / "left_out_images.npy"), 1000)
    left_out_correct = int((left_out_probs.argmax(1) == left_out_labels).sum())
    train_correct = sum(c["recall"] * c["support"] for c in json.loads(paths["per_class_train"].read_text()).values())
    pool = json.loads(paths["metrics"].read_text())["training_pool"]
    assert pool["accuracy"] == pytest.approx((train_correct + left_out_correct) / 360, abs=1e-6)
    train_accuracy = json.loads((paths["live"] / "metrics.json").read_text())["train"]["accuracy"]
    assert train_correct / 100 == pytest.approx(train_accuracy, abs=1e-5)


def test_all_stages_chain_on_synthetic_data(tmp_path, raw_dir, params_file, run_stage):
    paths = run_pipeline(run_stage, params_file, raw_dir, tmp_path)

    train_images = np.load(paths["pre"] / "train_images.npy")
    assert train_images.shape == (400, 784) and train_images.dtype == np.float32
    assert abs(train_images.mean()) < 1e-4  # standardized with its own statistics

    counts = json.loads(paths["counts"].read_text())
    assert counts["train"]["total"] == 360 and counts["val"]["total"] == 40 and counts["left_out"]["total"] == 0
    assert set(counts["val"]["per_class"].values()) == {4}

    summary = json.loads((paths["live"] / "metrics.json").read_text())
    assert summary["epochs_run"] == 3 and 1 <= summary["kept_epoch"] <= 3 and "step" not in summary
    for curve in ("train", "val"):  # from epoch 0, before any update, to epoch 3
        rows = (paths["live"] / f"plots/metrics/{curve}/accuracy.tsv").read_text().splitlines()
        assert [row.split("\t")[0] for row in rows] == ["step", "0", "1", "2", "3"]
    batches = (paths["live"] / "plots/metrics/batches/loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in batches] == ["step", "1", "2", "3"]  # no batch before epoch 1
    assert (paths["live"] / "curves.png").read_bytes()[:4] == b"\x89PNG"
    timing = json.loads(paths["timing"].read_text())
    assert (
        timing["numerics"]["device"] == "cpu"
        and timing["numerics"]["numerics"] == "pinned"
        and timing["train_seconds"] > 0
    )

    metrics = json.loads(paths["metrics"].read_text())["test"]
    assert metrics["accuracy"] > 0.9  # the synthetic task is easy
    assert metrics["errors"] == round((1 - metrics["accuracy"]) * 100)
    per_class = json.loads(paths["per_class"].read_text())
    assert sorted(per_class) == [str(d) for d in range(10)]
    assert sum(c["support"] for c in per_class.values()) == 100
    # The training images' report: the split's 360, scored by the kept model as train's clean pass does.
    per_class_train = json.loads(paths["per_class_train"].read_text())
    assert {d: c["support"] for d, c in per_class_train.items()} == counts["train"]["per_class"]
    train_correct = sum(c["recall"] * c["support"] for c in per_class_train.values())
    assert train_correct / 360 == pytest.approx(summary["train"]["accuracy"], abs=1e-5)
    # No train_subset: the training pool is the training images themselves.
    pool = json.loads(paths["metrics"].read_text())["training_pool"]
    assert pool["accuracy"] == pytest.approx(summary["train"]["accuracy"], abs=1e-5)
    rows = paths["csv"].read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 101
    probs = np.load(paths["probs"])
    assert probs.shape == (100, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)

    figures = sorted(p.name for p in paths["analysis"].iterdir())
    assert figures == [
        "confused_pairs.json",
        "confusion.png",
        "first_layer_weights.png",
        "mistakes.png",
        "pca_hidden.png",
        "pca_inputs.png",
        "per_class.png",
    ]
    assert all((paths["analysis"] / name).read_bytes()[:4] == b"\x89PNG" for name in figures if name.endswith(".png"))

    payload = torch.load(paths["model"], weights_only=True)
    assert payload["architecture"]["hidden_sizes"] == [32]
    assert payload["normalization"]["mode"] == "standard"
    assert torch.allclose(
        payload["normalization"]["mean"], torch.tensor(json.loads(paths["stats"].read_text())["mean"])
    )


@pytest.mark.parametrize(
    "model",
    [
        {"hidden_sizes": []},
        {"architecture": "cnn", "hidden_sizes": [120, 84]},
        {"architecture": "cnn", "hidden_sizes": []},
    ],
)
def test_every_stage_handles_logistic_regression_and_the_cnn(tmp_path, raw_dir, run_stage, model):
    params_file = write_params(tmp_path / "params.yaml", small_params(model=model))
    paths = run_pipeline(run_stage, params_file, raw_dir, tmp_path)
    assert json.loads(paths["metrics"].read_text())["test"]["accuracy"] > 0.5
    assert torch.load(paths["model"], weights_only=True)["architecture"] == {**small_params()["model"], **model}
    assert (paths["analysis"] / "first_layer_weights.png").read_bytes()[:4] == b"\x89PNG"


def test_download_stage_from_a_folder_mirror(tmp_path, params_file, run_stage, shared_mnist, monkeypatch):
    monkeypatch.setenv("MNIST_MIRROR", str(shared_mnist))
    result = run_stage(download.main, "--params", params_file, "--out", tmp_path / "raw")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(OFFICIAL_FILES)


def preprocess_into(out: Path, stats: Path, raw: Path, params_file: Path, run_stage):
    """preprocess with its outputs at `out` and `stats`, for the tests of unwritable outputs."""
    return run_stage(preprocess.main, "--params", params_file, "--raw", raw, "--out", out, "--stats", stats)


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit status 1 and one line on stderr (progress lines before it go to stdout)."""
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_params_fail_before_any_work(tmp_path, raw_dir, run_stage):
    bad = write_params(tmp_path / "params.yaml", small_params(train={"optimizer": {"lr": -1.0}}))
    result = run_stage(
        preprocess.main, "--params", bad, "--raw", raw_dir, "--out", tmp_path / "pre", "--stats", tmp_path / "s.json"
    )
    assert_one_line_error(result, "train.optimizer.lr", "greater than 0")
    assert not (tmp_path / "pre").exists() and not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:1000]), "not a complete gzip file"),
        (lambda path: path.write_bytes(b""), "too short for an IDX header"),
    ],
)
def test_corrupt_raw_file_leaves_no_output(tmp_path, raw_dir, params_file, run_stage, corrupt, fragment):
    corrupt(raw_dir / "train-images-idx3-ubyte.gz")
    out = tmp_path / "pre"
    result = run_stage(
        preprocess.main, "--params", params_file, "--raw", raw_dir, "--out", out, "--stats", tmp_path / "s.json"
    )
    assert_one_line_error(result, fragment, "download")
    assert not out.exists() and not list(tmp_path.glob(".pre*"))


def test_missing_input_names_the_stage_to_run(tmp_path, params_file, run_stage):
    result = run_stage(
        split.main,
        "--params",
        params_file,
        "--data",
        tmp_path / "nothing",
        "--out",
        tmp_path / "o",
        "--counts",
        tmp_path / "c.json",
    )
    assert_one_line_error(result, "not found", "dvc repro")


def test_unwritable_output_folder(tmp_path, raw_dir, params_file, run_stage):
    if os.geteuid() == 0:
        locked = Path("/sys/pipeline-test")  # sysfs refuses new entries even to root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    result = preprocess_into(locked / "pre", tmp_path / "s.json", raw_dir, params_file, run_stage)
    assert_one_line_error(result, str(locked), "permissions")
    assert not (tmp_path / "s.json").exists()


def test_output_in_place_of_a_file_is_reported(tmp_path, raw_dir, params_file, run_stage):
    """A path under a regular file cannot be created: the error says so in one line."""
    (tmp_path / "blocker").write_text("")
    result = preprocess_into(tmp_path / "blocker" / "pre", tmp_path / "s.json", raw_dir, params_file, run_stage)
    assert_one_line_error(result, "blocker")


def test_model_that_is_not_a_model(tmp_path, params_file, run_stage):
    (tmp_path / "model.pt").write_text("hello")
    result = run_stage(
        evaluate.main,
        "--params",
        params_file,
        "--model",
        tmp_path / "model.pt",
        "--data",
        tmp_path,
        "--metrics",
        tmp_path / "m.json",
        "--per-class",
        tmp_path / "pc.json",
        "--split",
        tmp_path,
        "--per-class-train",
        tmp_path / "pct.json",
        "--confusion-csv",
        tmp_path / "c.csv",
        "--predictions",
        tmp_path / "p.npy",
    )
    assert_one_line_error(result, "cannot be loaded safely", "retrain")
    assert not (tmp_path / "m.json").exists()


def test_curves_grow_in_place_and_an_interrupted_run_puts_the_last_ones_back(
    tmp_path, raw_dir, params_file, run_stage, monkeypatch
):
    paths, (preprocess_step, split_step, train_step, *_) = pipeline_steps(params_file, raw_dir, tmp_path)
    for step in (preprocess_step, split_step, train_step):
        assert run_stage(*step).exit_code == 0
    last_good = {path: path.read_bytes() for path in paths["live"].rglob("*") if path.is_file()}
    seen_mid_run = []

    def interrupted(model, train_set, val_set, params, background, on_epoch):
        def spy(outcome):
            on_epoch(outcome)
            seen_mid_run.append((paths["live"] / "plots/metrics/val/accuracy.tsv").read_text().count("\n"))
            if outcome.epoch == 2:
                raise KeyboardInterrupt

        return original(model, train_set, val_set, params, background, spy)

    original = train.train
    monkeypatch.setattr(train, "train", interrupted)
    assert run_stage(*train_step).exit_code != 0
    assert seen_mid_run == [2, 3, 4]  # header and epoch 0, then one row per epoch, in place as it ends
    assert {path: path.read_bytes() for path in paths["live"].rglob("*") if path.is_file()} == last_good
    assert not list(paths["live"].parent.glob(".*"))  # nothing left aside


def test_divergence_leaves_no_model(tmp_path, raw_dir, run_stage):
    params_file = write_params(tmp_path / "params.yaml", small_params(train={"optimizer": {"name": "sgd", "lr": 1e20}}))
    paths, (preprocess_step, split_step, train_step, *_) = pipeline_steps(params_file, raw_dir, tmp_path)
    assert run_stage(*preprocess_step).exit_code == 0 and run_stage(*split_step).exit_code == 0
    assert_one_line_error(run_stage(*train_step), "at epoch 1, step", "lower train.optimizer.lr")
    assert not (tmp_path / "model/model.pt").exists() and not (tmp_path / "reports/train").exists()


def test_a_recorded_divergence_is_trains_result_and_evaluate_runs_on_it(tmp_path, raw_dir, run_stage):
    train_params = {"optimizer": {"name": "sgd", "lr": 1e20}, "on_divergence": "record"}
    params_file = write_params(tmp_path / "params.yaml", small_params(train=train_params))
    paths = run_pipeline(run_stage, params_file, raw_dir, tmp_path)
    summary = json.loads((paths["live"] / "metrics.json").read_text())
    assert summary["kept_epoch"] == 0 and summary["epochs_run"] == 0
    assert summary["diverged"]["epoch"] == 1 and summary["diverged"]["step"] >= 1
    assert isinstance(summary["diverged"]["loss"], str | float)  # "inf" or "nan" as text: the file stays JSON
    assert json.loads((paths["metrics"]).read_text())["test"]["accuracy"] < 0.5  # the untouched model


def test_without_a_validation_set_every_stage_runs_on_all_training_images(tmp_path, raw_dir, run_stage):
    settings = {"split": {"val_fraction": 0.0}, "train": {"keep": "last"}}
    paths = run_pipeline(run_stage, write_params(tmp_path / "params.yaml", small_params(**settings)), raw_dir, tmp_path)
    counts = json.loads(paths["counts"].read_text())
    assert counts["train"]["total"] == 400 and counts["val"]["total"] == 0  # write_raw's 400 training images
    summary = json.loads((paths["live"] / "metrics.json").read_text())
    assert summary["val"] is None and summary["kept_epoch"] == summary["epochs_run"] == 3
    assert not (paths["live"] / "plots/metrics/val").exists()
    assert json.loads(paths["metrics"].read_text())["test"]["accuracy"] > 0.5


def test_debug_flag_shows_the_traceback(tmp_path, params_file, run_stage):
    from pipeline.lib.errors import PipelineError

    with pytest.raises(PipelineError):
        run_stage(
            split.main,
            "--debug",
            "--params",
            params_file,
            "--data",
            tmp_path / "x",
            "--out",
            tmp_path / "o",
            "--counts",
            tmp_path / "c",
        )


def test_gallery_of_no_mistakes_is_an_empty_figure(tmp_path):
    from pipeline.lib.analysis_figures import digit_grid
    from pipeline.lib.figures import save_figure

    save_figure(digit_grid(np.empty((0, 784)), [], "0 most confident of 0 mistakes"), tmp_path / "none.png")
    assert (tmp_path / "none.png").read_bytes()[:4] == b"\x89PNG"
