"""The comparison behind `python -m pipeline verify`."""

import copy

from pipeline.lib.lockcheck import compare, within_tolerance

LOCK = {
    "schema": "2.0",
    "stages": {
        "split": {
            "deps": [{"path": "pipeline/split.py", "md5": "a1"}, {"path": "data/preprocessed", "md5": "b1.dir"}],
            "params": {"params.yaml": {"split": {"seed": 42}}},
            "outs": [{"path": "data/split", "md5": "c1.dir"}],
        },
        "train": {
            "deps": [{"path": "data/split", "md5": "c1.dir"}],
            "outs": [{"path": "data/model/model.pt", "md5": "d1"}, {"path": "reports/timing/train.json", "md5": "e1"}],
        },
    },
}


def changed(stage: str, kind: str, index: int, value: str) -> dict:
    lock = copy.deepcopy(LOCK)
    lock["stages"][stage][kind][index]["md5"] = value
    return lock


def test_identical_locks_have_no_differences_and_skip_timings():
    differences, compared = compare(LOCK, copy.deepcopy(LOCK))
    assert differences == [] and compared == ["data/model/model.pt", "data/split"]


def test_changed_code_is_a_stale_input():
    differences, _ = compare(LOCK, changed("split", "deps", 0, "zz"))
    assert [(d.stage, d.path, d.kind) for d in differences] == [("split", "pipeline/split.py", "input")]


def test_changed_params_are_a_stale_input():
    lock = copy.deepcopy(LOCK)
    lock["stages"]["split"]["params"]["params.yaml"]["split"]["seed"] = 1
    assert [(d.path, d.kind) for d in compare(LOCK, lock)[0]] == [("params.yaml", "input")]


def test_changed_outputs_are_reported_per_path():
    differences, _ = compare(LOCK, changed("train", "outs", 0, "zz"))
    assert [(d.stage, d.path, d.kind) for d in differences] == [("train", "data/model/model.pt", "output")]
    assert compare(LOCK, changed("train", "outs", 1, "zz"))[0] == []  # timings never count


def test_tolerance_is_a_tenth_of_a_point():
    assert within_tolerance(0.9826, 0.9836) and within_tolerance(0.9826, 0.9816)
    assert not within_tolerance(0.9826, 0.9838)
