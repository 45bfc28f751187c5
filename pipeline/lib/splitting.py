"""Train/validation split (seeded and stratified, the last images, or none), with an optional smaller
training subset (stratified, or the first images)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline.lib.errors import PipelineError
from pipeline.lib.mnist import CLASS_NAMES
from pipeline.lib.params import Split


def split_indices(labels: np.ndarray, params: Split) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) index arrays, each sorted; a stratified holdout keeps the class
    proportions of `labels` in both, the last images keep the file's order."""
    indices = np.arange(len(labels))
    if params.val_fraction == 0:
        train, validation = indices, indices[:0]
    elif params.holdout == "last":
        kept = int(len(labels) * (1 - params.val_fraction))  # Keras' own arithmetic
        train, validation = indices[:kept], indices[kept:]
    else:
        train, validation = train_test_split(
            indices, test_size=params.val_fraction, stratify=labels, random_state=params.seed
        )
    if params.train_subset is not None:
        if params.train_subset > len(train):
            raise PipelineError(
                f"split.train_subset is {params.train_subset} but only {len(train)} training images remain "
                "after the validation split: lower it or set it to null"
            )
        if params.subset_draw == "first":
            train = np.sort(train)[: params.train_subset]
        elif params.train_subset < len(train):
            train, _ = train_test_split(
                train, train_size=params.train_subset, stratify=labels[train], random_state=params.seed
            )
    return np.sort(train), np.sort(validation)


def left_out(count: int, train: np.ndarray, validation: np.ndarray) -> np.ndarray:
    """The training-side images that train_subset did not draw, sorted: none without a subset."""
    return np.setdiff1d(np.arange(count), np.concatenate([train, validation]))


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts)}
