"""The built-in example: handwritten digits whose tint is a shortcut for the label.

:func:`spurious_digits` is scikit-learn's 8x8 handwritten digits (shipped with
scikit-learn, nothing to download), made into a small copy of the CelebA / Waterbirds
problem that fairness triggers are meant to fix:

- the task is binary: class ``"0-4"`` (digit < 5, index 0) against ``"5-9"`` (digit >= 5,
  index 1);
- each image is upsampled to ``size`` x ``size`` and drawn in one of two tints, its group:
  ``"green"`` (id 0) or ``"red"`` (id 1);
- in the train split the tint agrees with the label (green = "0-4", red = "5-9") for
  ``train_correlation`` of each class's rows (default 90 %); in the val and test splits
  it is independent of the label (``test_correlation=0.5``).

A model trained on the train split learns the tint as well as the shape, and is worse on
the two minority cells (red "0-4" digits, green "5-9" digits) of the test split.
The 1797 images are split 60/20/20 into train/val/test by ``seed``; everything is
deterministic given the arguments.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from reprogram.data.datasets import ImageTransform, TensorGroupDataset
from reprogram.data.groups import GroupEncoder
from reprogram.errors import InputError

__all__ = [
    "SpuriousDigits",
    "spurious_digits",
    "spurious_digits_table",
    "SPURIOUS_DIGITS_CLASSES",
    "SPURIOUS_DIGITS_GROUPS",
]

SPURIOUS_DIGITS_CLASSES = ["0-4", "5-9"]
SPURIOUS_DIGITS_GROUPS = ["green", "red"]
_SPLITS = {"train": 0, "val": 1, "test": 2}
_FRACTIONS = (0.6, 0.2, 0.2)
# RGB of the digit strokes per group id; a little of the other channels keeps the shape
# visible in every channel, so the tint is a cue layered on the digit, not a replacement.
_TINTS = np.array([[0.15, 1.0, 0.15], [1.0, 0.15, 0.15]], dtype=np.float32)


class SpuriousDigits(TensorGroupDataset):
    """One split of :func:`spurious_digits`: a dataset yielding ``(image, y, group)``.

    ``images`` is the float32 ``(N, 3, H, W)`` tensor in [0, 1] (multiples of 1/255, so a
    PNG round trip is exact); ``labels`` and ``group_ids`` int64 arrays; ``digits`` the
    original digit of each row; ``classes`` ``["0-4", "5-9"]``; ``group_names``
    ``["green", "red"]``; ``tensors`` gives ``(images, labels, groups)`` as tensors.
    ``image_meta`` is the ``meta["image"]`` entry a model trained on it should save (no
    normalization: mean 0, std 1).
    """

    def __init__(self, images: torch.Tensor, labels, group_ids, digits, *, split: str, groups: GroupEncoder):
        super().__init__(images, labels, group_ids, groups=groups, classes=SPURIOUS_DIGITS_CLASSES)
        self.split = split
        self.digits = np.asarray(digits, dtype=np.int64)

    @property
    def images(self) -> torch.Tensor:
        """The ``(N, 3, H, W)`` float32 images in [0, 1]."""
        return self.inputs

    @property
    def image_meta(self) -> dict:
        """The ``meta["image"]`` settings that load the PNG table back to these exact tensors."""
        return ImageTransform(size=tuple(self.images.shape[-2:]), channels=3, mean=(0.0,) * 3, std=(1.0,) * 3).to_meta()

    def __repr__(self) -> str:
        return f"SpuriousDigits(split={self.split!r}, rows={len(self)}, size={tuple(self.images.shape[-2:])})"


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    target = d.target.astype(np.int64)
    target.setflags(write=False)
    return images, target


def _group_encoder() -> GroupEncoder:
    return GroupEncoder().fit(pd.DataFrame({"group": SPURIOUS_DIGITS_GROUPS}))


def spurious_digits(
    split: str = "train",
    *,
    size: int = 16,
    seed: int = 0,
    train_correlation: float = 0.9,
    test_correlation: float = 0.5,
) -> SpuriousDigits:
    """Build one split (``"train"``, ``"val"`` or ``"test"``) of the spurious-digits example.

    ``train_correlation`` is the share of each class's train rows whose tint agrees with
    the label; ``test_correlation`` the same for val and test (0.5: tint independent of
    the label). Shares are met exactly (rounded to whole rows), not sampled.
    """
    if split not in _SPLITS:
        raise InputError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    if not isinstance(size, (int, np.integer)) or not 8 <= size <= 512:
        raise InputError(f"size must be an integer between 8 and 512, got {size!r}")
    for name, c in (("train_correlation", train_correlation), ("test_correlation", test_correlation)):
        if not 0.0 <= float(c) <= 1.0:
            raise InputError(f"{name} must lie in [0, 1], got {c!r}")
    raw, digits_all = _digits()
    n = len(digits_all)
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(np.round(np.array(_FRACTIONS) * n).astype(int))[:2]
    rows = np.split(order, cuts)[_SPLITS[split]]

    digits = digits_all[rows]
    labels = (digits >= 5).astype(np.int64)
    corr = float(train_correlation if split == "train" else test_correlation)
    # A separate stream per split, so the tints of one split do not depend on another's.
    rng = np.random.default_rng([seed, _SPLITS[split]])
    groups = labels.copy()
    for k in (0, 1):
        idx = np.flatnonzero(labels == k)
        n_flip = int(round((1.0 - corr) * idx.size))
        flip = rng.choice(idx, size=n_flip, replace=False)
        groups[flip] = 1 - k

    x = torch.from_numpy(raw[rows]).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp_(0.0, 1.0)
    tint = torch.from_numpy(_TINTS[groups])[:, :, None, None]
    images = x * tint
    # Quantize to 8-bit levels so the PNG files of spurious_digits_table decode to the same values.
    images = torch.round(images * 255.0) / 255.0
    return SpuriousDigits(images.contiguous(), labels, groups, digits, split=split, groups=_group_encoder())


def spurious_digits_table(
    out_dir: str | os.PathLike,
    split: str = "train",
    *,
    size: int = 16,
    seed: int = 0,
    train_correlation: float = 0.9,
    test_correlation: float = 0.5,
) -> Path:
    """Write one split of :func:`spurious_digits` as PNG files plus a CSV manifest.

    Writes ``out_dir/<split>.csv`` with columns ``path`` (relative to ``out_dir``),
    ``label`` (class name) and ``group`` (group name), and the images under
    ``out_dir/<split>/``; returns the CSV's path. Load it with
    ``load_dataset(csv, image="path", label="label", sensitive="group",
    image_meta=dataset.image_meta)``. An existing split is replaced. Everything is written
    in a temporary folder first and the CSV is moved in last, so a CSV present means a
    complete split.
    """
    ds = spurious_digits(
        split, size=size, seed=seed, train_correlation=train_correlation, test_correlation=test_correlation
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=out))
    try:
        (tmp / split).mkdir()
        pixels = (ds.images * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        names = [f"{split}/{i:05d}.png" for i in range(len(ds))]
        for name, a in zip(names, pixels):  # one file per image: the loop is the I/O
            Image.fromarray(a).save(tmp / name)
        frame = pd.DataFrame(
            {
                "path": names,
                "label": np.asarray(ds.classes, dtype=object)[ds.labels],
                "group": np.asarray(ds.group_names, dtype=object)[ds.group_ids],
            }
        )
        frame.to_csv(tmp / f"{split}.csv", index=False)
        csv_path, img_dir = out / f"{split}.csv", out / split
        csv_path.unlink(missing_ok=True)
        if img_dir.exists():
            img_dir.rename(tmp / "old")
        (tmp / split).rename(img_dir)
        os.replace(tmp / f"{split}.csv", csv_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return csv_path
