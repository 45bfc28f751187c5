"""Standardization statistics come from the training images only."""

import json

import numpy as np
import pytest

from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Preprocess
from pipeline.stages import preprocess

from conftest import synthetic_digits, write_raw
from idx_writer import write_idx_gz


def test_standard_uses_one_mean_and_std_of_training_pixels():
    images, _ = synthetic_digits(50, seed=0)
    normalization = Normalization.fit(images, Preprocess(normalization="standard", std_floor=0.01))
    pixels = images.astype(np.float64) / 255
    assert np.allclose(normalization.mean, pixels.mean()) and np.allclose(normalization.std, pixels.std())
    standardized = normalization.apply(images)
    assert standardized.shape == (50, 784) and standardized.dtype == np.float32
    assert abs(standardized.mean()) < 1e-5 and abs(standardized.std() - 1) < 1e-4


def test_per_pixel_floors_constant_pixels():
    images, _ = synthetic_digits(50, seed=0)
    images[:, 0, 0] = 7  # a pixel with zero variance
    normalization = Normalization.fit(images, Preprocess(normalization="per_pixel", std_floor=0.05))
    assert normalization.std[0] == pytest.approx(0.05)
    assert np.isfinite(normalization.apply(images)).all()


def test_unit_divides_by_255_only():
    images, _ = synthetic_digits(5, seed=0)
    normalization = Normalization.fit(images, Preprocess(normalization="unit", std_floor=0.01))
    assert np.allclose(normalization.apply(images), images.reshape(5, 784) / 255)


@pytest.mark.parametrize(
    ("mode", "expected"), [("centered", lambda x: (x / 255 - 0.5) / 0.5), ("raw", lambda x: x.astype(np.float32))]
)
def test_centered_and_raw_scale_without_statistics(mode, expected):
    images, _ = synthetic_digits(5, seed=0)
    normalization = Normalization.fit(images, Preprocess(normalization=mode, std_floor=0.01))
    rows = normalization.apply(images)
    assert np.allclose(rows, expected(images.reshape(5, 784)), atol=1e-5)
    assert np.allclose(normalization.black_pixel(), expected(np.zeros(784)), atol=1e-5)
    assert np.array_equal(Normalization.from_json(normalization.to_json()).apply(images), rows)


def test_json_round_trip_is_compact_for_standard():
    images, _ = synthetic_digits(20, seed=0)
    normalization = Normalization.fit(images, Preprocess(normalization="standard", std_floor=0.01))
    payload = normalization.to_json()
    assert isinstance(payload["mean"], float)
    again = Normalization.from_json(payload)
    assert np.array_equal(again.mean, normalization.mean) and np.array_equal(again.std, normalization.std)


def test_test_images_cannot_change_the_statistics(tmp_path, params_file, run_stage):
    """Two raw folders with the same training files and different test files give the same stats."""
    outputs = []
    for variant, test_seed in (("a", 1), ("b", 99)):
        raw = tmp_path / variant / "raw"
        write_raw(raw)
        images, labels = synthetic_digits(100, seed=test_seed)
        write_idx_gz(raw / "t10k-images-idx3-ubyte.gz", 255 - images)
        out, stats = tmp_path / variant / "pre", tmp_path / variant / "stats.json"
        result = run_stage(preprocess.main, "--params", params_file, "--raw", raw, "--out", out, "--stats", stats)
        assert result.exit_code == 0, result.output
        outputs.append(
            (json.loads(stats.read_text()), np.load(out / "train_images.npy"), np.load(out / "test_images.npy"))
        )
    (stats_a, train_a, test_a), (stats_b, train_b, test_b) = outputs
    assert stats_a == stats_b
    assert np.array_equal(train_a, train_b)
    assert not np.array_equal(test_a, test_b)
