"""Seeded, stratified train/validation split, with an optional smaller training subset."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline.lib.errors import PipelineError
from pipeline.lib.mnist import CLASS_NAMES
from pipeline.lib.params import Split


def split_indices(labels: np.ndarray, params: Split) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) index arrays, each sorted; both keep the class proportions of `labels`."""
    indices = np.arange(len(labels))
    train, validation = train_test_split(
        indices, test_size=params.val_fraction, stratify=labels, random_state=params.seed
    )
    if params.train_subset is not None:
        if params.train_subset > len(train):
            raise PipelineError(
                f"split.train_subset is {params.train_subset} but only {len(train)} training images remain "
                "after the validation split: lower it or set it to null"
            )
        if params.train_subset < len(train):
            train, _ = train_test_split(
                train, train_size=params.train_subset, stratify=labels[train], random_state=params.seed
            )
    return np.sort(train), np.sort(validation)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts)}
