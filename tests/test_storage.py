"""Stages hand data over as pairs of .npy files; a missing or damaged one is one line naming the fix."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.lib.errors import PipelineError
from pipeline.lib.storage import read_pair, write_pair


def test_a_pair_round_trips_with_its_dtypes(tmp_path):
    images, labels = np.arange(2 * 784, dtype=np.float32).reshape(2, 784), np.array([3, 7], dtype=np.int64)
    write_pair(tmp_path, "train", images, labels)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train_images.npy", "train_labels.npy"]
    read_images, read_labels = read_pair(tmp_path, "train")
    assert read_images.dtype == np.float32 and np.array_equal(read_images, images)
    assert read_labels.dtype == np.int64 and np.array_equal(read_labels, labels)


def test_equal_arrays_give_equal_bytes(tmp_path):
    array = np.linspace(0, 1, 50, dtype=np.float32)
    write_pair(tmp_path / "a", "x", array, array)
    write_pair(tmp_path / "b", "x", array.copy(), array.copy())
    assert (tmp_path / "a/x_images.npy").read_bytes() == (tmp_path / "b/x_images.npy").read_bytes()


def test_a_missing_file_names_the_stages_to_run(tmp_path):
    with pytest.raises(PipelineError, match=r"val_images.npy not found: run the stages before this one \(dvc repro\)"):
        read_pair(tmp_path, "val")


def test_a_damaged_file_names_the_stage_to_rerun(tmp_path):
    (tmp_path / "val_images.npy").write_bytes(b"not an array")
    (tmp_path / "val_labels.npy").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"is not a valid \.npy array: rerun the stage that writes it"):
        read_pair(tmp_path, "val")
