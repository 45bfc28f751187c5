"""The verdict behind `python -m pipeline verify`, one test per verdict, on small dvc.yaml/dvc.lock documents."""

from __future__ import annotations

import copy

import pytest

from pipeline.commands.verify.verdict import Run, Verdict, judge, stale_inputs

STAGES = {
    "download": {
        "cmd": "python -m pipeline.stages.download",
        "deps": ["pipeline/stages/download.py"],
        "outs": ["data/raw"],
    },
    "train": {
        "cmd": "python -m pipeline.stages.train",
        "deps": ["pipeline/stages/train.py", "data/raw"],
        "params": ["train"],
        "outs": [{"data/model.pt": {"persist": True}}],
        "metrics": [{"reports/timing/train.json": {"cache": False}}],
    },
    "evaluate": {
        "cmd": "python -m pipeline.stages.evaluate",
        "deps": ["pipeline/stages/evaluate.py", "data/model.pt"],
        "metrics": [{"reports/metrics.json": {"cache": False}}],
    },
}
LOCK = {
    "schema": "2.0",
    "stages": {
        "download": {
            "cmd": "python -m pipeline.stages.download",
            "deps": [{"path": "pipeline/stages/download.py", "md5": "code-download"}],
            "outs": [{"path": "data/raw", "md5": "raw.dir"}],
        },
        "train": {
            "cmd": "python -m pipeline.stages.train",
            "deps": [{"path": "pipeline/stages/train.py", "md5": "code-train"}, {"path": "data/raw", "md5": "raw.dir"}],
            "params": {"params.yaml": {"train": {"lr": 0.001}}},
            "outs": [{"path": "data/model.pt", "md5": "model"}, {"path": "reports/timing/train.json", "md5": "t1"}],
        },
        "evaluate": {
            "cmd": "python -m pipeline.stages.evaluate",
            "deps": [
                {"path": "pipeline/stages/evaluate.py", "md5": "code-evaluate"},
                {"path": "data/model.pt", "md5": "model"},
            ],
            "outs": [{"path": "reports/metrics.json", "md5": "metrics"}],
        },
    },
}
TREE = {
    "pipeline/stages/download.py": "code-download",
    "pipeline/stages/train.py": "code-train",
    "pipeline/stages/evaluate.py": "code-evaluate",
}
PARAMS = {"train": {"lr": 0.001}, "evaluate": {"batch_size": 2000}}
PINNED = {"device": "cpu", "cpu_capability": "AVX2", "blas": "MKL CNR AVX2 strict", "threads": 2}
TOLERANCE = 0.004


def stale(tree=TREE, params=PARAMS, stages=STAGES):
    return stale_inputs(LOCK, stages, params, tree.get)


def rerun(**changed_outputs: str) -> dict:
    """A reproduced dvc.lock whose outputs (by file name: raw, model, metrics, train) got new hashes."""
    lock = copy.deepcopy(LOCK)
    for stage in lock["stages"].values():
        for out in stage["outs"]:
            name = out["path"].rsplit("/", 1)[-1].split(".")[0]
            out["md5"] = changed_outputs.get(name, out["md5"])
    return lock


def verdict(lock: dict, numerics: dict = PINNED, accuracy: float = 0.9825):
    return judge(
        LOCK,
        lock,
        STAGES,
        Run(PINNED, 0.9825),
        Run(numerics, accuracy),
        TOLERANCE,
        frozenset({"reports/timing/train.json"}),
    )


def test_matching_tree_is_not_stale():
    assert stale() is None


def test_changed_code_is_stale_code_but_a_changed_upstream_output_is_not():
    report = stale(tree=TREE | {"pipeline/stages/train.py": "edited"})
    assert report.verdict is Verdict.STALE_CODE and report.detail == "train: pipeline/stages/train.py"
    # evaluate's dep data/model.pt is train's output: no hash of the working tree is asked for it
    assert stale(tree=TREE | {"data/model.pt": "retrained", "data/raw": "elsewhere"}) is None


def test_changed_command_or_new_stage_is_stale_code():
    stages = copy.deepcopy(STAGES)
    stages["train"]["cmd"] += " --fast"
    stages["export"] = {"cmd": "python -m pipeline.stages.export", "deps": ["data/model.pt"]}
    assert stale(stages=stages).detail == "train: cmd, export: not in the committed dvc.lock"


def test_changed_params_are_stale_params():
    report = stale(params={"train": {"lr": 0.01}})
    assert report.verdict is Verdict.STALE_PARAMS and report.detail == "train: train.lr 0.001 -> 0.01"
    assert not report.verdict.passed


def test_identical_rerun_is_exact_and_ignores_timings():
    report = verdict(rerun(train="other seconds"), numerics=PINNED | {"threads": 16})
    assert report.verdict is Verdict.EXACT and report.verdict.passed
    assert report.outputs == {"data/model.pt": "exact", "data/raw": "exact", "reports/metrics.json": "exact"}


def test_other_downloaded_bytes_are_changed_data():
    report = verdict(rerun(raw="other.dir", model="m2"))
    assert report.verdict is Verdict.CHANGED_DATA and report.detail == "data/raw"


def test_same_numerics_different_bytes_is_nondeterminism():
    report = verdict(rerun(model="m2", metrics="x2"))
    assert report.verdict is Verdict.NONDETERMINISTIC and not report.verdict.passed
    assert report.outputs["data/model.pt"] == "differs" and report.outputs["data/raw"] == "exact"


@pytest.mark.parametrize(
    ("accuracy", "expected"), [(0.9800, Verdict.WITHIN_TOLERANCE), (0.9784, Verdict.OUT_OF_TOLERANCE)]
)
def test_other_numerics_are_judged_by_test_accuracy(accuracy, expected):
    report = verdict(rerun(model="m2", metrics="x2"), numerics=PINNED | {"cpu_capability": "AVX512"}, accuracy=accuracy)
    assert report.verdict is expected and report.verdict.passed == (expected is Verdict.WITHIN_TOLERANCE)
    assert "cpu_capability AVX2 -> AVX512" in report.detail
    label = "within tolerance" if expected is Verdict.WITHIN_TOLERANCE else "differs"
    assert report.outputs == {"data/model.pt": label, "data/raw": "exact", "reports/metrics.json": label}
