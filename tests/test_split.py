"""The validation split is seeded, stratified and disjoint, the last images as Keras takes them, or
none; train_subset shrinks only the training part, by a stratified draw or to its first images."""

import numpy as np
import pytest

from pipeline.lib.errors import PipelineError
from pipeline.lib.params import Split
from pipeline.lib.splitting import class_counts, left_out, split_indices

LABELS = np.repeat(np.arange(10, dtype=np.uint8), 100)


def split(holdout: str = "stratified", subset_draw: str = "stratified", **settings) -> Split:
    return Split(holdout=holdout, subset_draw=subset_draw, **settings)


def test_disjoint_covering_and_stratified():
    train, val = split_indices(LABELS, split(val_fraction=0.2, train_subset=None, seed=1))
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(LABELS)
    assert set(class_counts(LABELS[val]).values()) == {20}


def test_same_seed_same_split_other_seed_other_split():
    first = split_indices(LABELS, split(val_fraction=0.1, train_subset=None, seed=7))
    again = split_indices(LABELS, split(val_fraction=0.1, train_subset=None, seed=7))
    other = split_indices(LABELS, split(val_fraction=0.1, train_subset=None, seed=8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


def test_train_subset_keeps_validation_and_proportions():
    full_train, full_val = split_indices(LABELS, split(val_fraction=0.1, train_subset=None, seed=3))
    train, val = split_indices(LABELS, split(val_fraction=0.1, train_subset=200, seed=3))
    assert np.array_equal(val, full_val)
    assert len(train) == 200 and set(train) <= set(full_train)
    assert set(class_counts(LABELS[train]).values()) == {20}


def test_left_out_is_what_the_subset_did_not_draw():
    train, val = split_indices(LABELS, split(val_fraction=0.1, train_subset=200, seed=3))
    unused = left_out(len(LABELS), train, val)
    assert len(unused) == len(LABELS) - 200 - len(val)
    assert np.array_equal(np.sort(np.concatenate([train, val, unused])), np.arange(len(LABELS)))
    full_train, full_val = split_indices(LABELS, split(val_fraction=0.1, train_subset=None, seed=3))
    assert len(left_out(len(LABELS), full_train, full_val)) == 0


def test_train_subset_larger_than_available():
    with pytest.raises(PipelineError, match="split.train_subset is 5000 but only 900"):
        split_indices(LABELS, split(val_fraction=0.1, train_subset=5000, seed=3))


def test_the_last_images_are_the_holdout_as_keras_validation_split_takes_them():
    labels = np.arange(60_000) % 10
    train, val = split_indices(labels, split("last", val_fraction=0.2, train_subset=None, seed=3))
    assert np.array_equal(val, np.arange(48_000, 60_000)) and np.array_equal(train, np.arange(48_000))
    subset, same_val = split_indices(labels, split("last", val_fraction=0.2, train_subset=1_000, seed=3))
    assert np.array_equal(same_val, val) and len(subset) == 1_000 and subset.max() < 48_000


def test_no_validation_set_trains_on_every_image():
    train, val = split_indices(LABELS, split(val_fraction=0.0, train_subset=None, seed=3))
    assert np.array_equal(train, np.arange(len(LABELS))) and len(val) == 0


@pytest.mark.parametrize("holdout", ["stratified", "last"])
def test_the_first_images_are_the_subset_as_the_cnn_assignment_takes_them(holdout):
    labels = np.arange(60_000) % 10
    full_train, full_val = split_indices(labels, split(holdout, val_fraction=1 / 6, train_subset=None, seed=3))
    train, val = split_indices(labels, split(holdout, "first", val_fraction=1 / 6, train_subset=2_000, seed=3))
    assert np.array_equal(val, full_val) and np.array_equal(train, full_train[:2_000])
    if holdout == "last":
        assert np.array_equal(train, np.arange(2_000)) and np.array_equal(val, np.arange(50_000, 60_000))
