"""torch Datasets over a table: tabular features, text, or image files; and ``load_dataset``.

Every dataset yields ``(x, y, group)``: ``y`` the class index and ``group`` the group id
(both int64 tensors), ``x`` a float32 vector (tabular), the raw string (text) or a
normalized float32 image tensor ``(C, H, W)``. Every dataset also exposes, without being
iterated, ``labels`` and ``group_ids`` (int64 numpy arrays), ``classes`` (class values,
index ``i`` = class ``i``), ``groups`` (the fitted :class:`GroupEncoder`) and
``group_names``, so metrics and group-balanced samplers can be computed directly.

Row numbers in messages are the 0-based position in the table, which is also the
dataset index and the ``id`` of ``reprogram apply``'s predictions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from reprogram.data.encoding import FeatureEncoder, LabelEncoder, as_plain_values
from reprogram.data.groups import GroupEncoder
from reprogram.data.tables import read_table, require_columns
from reprogram.errors import InputError, MissingValuesError, NotFittedError

__all__ = [
    "GroupedDataset",
    "TabularDataset",
    "TextDataset",
    "ImageDataset",
    "TensorGroupDataset",
    "ImageTransform",
    "image_transform_from_meta",
    "collate_text",
    "tokenize_collate",
    "TokenizeCollate",
    "load_dataset",
    "load_dataset_like",
]

# torchvision's ImageNet statistics: what most pretrained image models were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GroupedDataset(Dataset):
    """Base of the datasets here: labels, groups and their names, held as arrays.

    ``labels`` and ``group_ids`` are int64 arrays of the same length; ``groups`` is the
    fitted :class:`GroupEncoder` whose ``names_[g]`` names group ``g``; ``classes[k]`` is
    the value of class ``k``; ``label_encoder`` maps class values to indices.
    """

    def __init__(
        self,
        labels: Any,
        group_ids: Any,
        *,
        groups: GroupEncoder,
        classes: Sequence[Any],
        label_encoder: LabelEncoder | None = None,
        source: str | None = None,
    ):
        # Copies: the inputs may be read-only views of a caller's DataFrame (copy-on-write),
        # and torch tensors made from them below must be able to own their memory.
        self.labels = np.array(labels, dtype=np.int64, copy=True)
        self.group_ids = np.array(group_ids, dtype=np.int64, copy=True)
        if self.labels.ndim != 1 or self.group_ids.shape != self.labels.shape:
            raise InputError(
                f"labels and group ids must be 1-D and equally long, got {self.labels.shape} and {self.group_ids.shape}"
            )
        self.groups = groups
        self.classes = list(classes)
        self.label_encoder = label_encoder if label_encoder is not None else LabelEncoder.from_classes(self.classes)
        self.source = source
        self._y = torch.from_numpy(self.labels)
        self._g = torch.from_numpy(self.group_ids)

    @property
    def group_names(self) -> list[str]:
        """Group names in id order."""
        return list(self.groups.names_)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def n_groups(self) -> int:
        """Number of groups."""
        return len(self.groups.names_)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < -n or i >= n:
            raise IndexError(f"index {i} out of range for a dataset of {n} rows")
        return i % n if n else i

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rows={len(self)}, classes={self.classes}, groups={self.group_names})"


class TabularDataset(GroupedDataset):
    """Rows of an encoded feature matrix: ``x`` is a float32 vector of ``n_features``."""

    def __init__(
        self, features: Any, labels: Any, group_ids: Any, *, feature_encoder: FeatureEncoder | None = None, **kw
    ):
        super().__init__(labels, group_ids, **kw)
        x = np.ascontiguousarray(features, dtype=np.float32)
        if not x.flags.writeable:
            x = x.copy()
        if x.ndim != 2 or x.shape[0] != len(self.labels):
            raise InputError(f"features must be a 2-D array with {len(self.labels)} rows, got shape {x.shape}")
        self.features = x
        self.feature_encoder = feature_encoder
        self._x = torch.from_numpy(x)

    @property
    def n_features(self) -> int:
        """Width of the encoded feature vector."""
        return int(self.features.shape[1])

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(X, y, group)`` as whole tensors (sharing memory with the arrays)."""
        return self._x, self._y, self._g

    def __getitem__(self, i: int):
        i = self._index(i)
        return self._x[i], self._y[i], self._g[i]


class TextDataset(GroupedDataset):
    """Rows of a text column: ``x`` is the raw string. Batch with :func:`collate_text` or
    :func:`tokenize_collate`."""

    def __init__(self, texts: Any, labels: Any, group_ids: Any, **kw):
        super().__init__(labels, group_ids, **kw)
        t = np.asarray(texts, dtype=object)
        if t.shape != self.labels.shape:
            raise InputError(f"texts must be 1-D with {len(self.labels)} rows, got shape {t.shape}")
        self.texts = t

    def __getitem__(self, i: int):
        i = self._index(i)
        return self.texts[i], self._y[i], self._g[i]


def collate_text(batch: Sequence[tuple[str, torch.Tensor, torch.Tensor]]):
    """Collate ``(text, y, group)`` items into ``(list of texts, y tensor, group tensor)``."""
    texts, ys, gs = zip(*batch) if batch else ((), (), ())
    return list(texts), torch.as_tensor(ys, dtype=torch.int64), torch.as_tensor(gs, dtype=torch.int64)


class TokenizeCollate:
    """A ``collate_fn`` that tokenizes a batch of texts; see :func:`tokenize_collate`.

    A class rather than a closure, so that it can be sent to DataLoader worker processes.
    """

    def __init__(self, tokenizer: Any, max_length: int = 128, padding: bool | str = True):
        if not callable(tokenizer):
            raise InputError(f"tokenizer must be callable (a Hugging Face tokenizer), got {type(tokenizer).__name__}")
        if int(max_length) < 1:
            raise InputError(f"max_length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.padding = padding

    def __call__(self, batch: Sequence[tuple[str, torch.Tensor, torch.Tensor]]):
        texts, y, g = collate_text(batch)
        try:
            enc = self.tokenizer(
                texts, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        except ValueError as e:  # e.g. a tokenizer with no padding token
            raise InputError(f"cannot tokenize the batch: {' '.join(str(e).split())}") from None
        ids = enc["input_ids"]
        mask = enc["attention_mask"] if "attention_mask" in enc else torch.ones_like(ids)
        return {"input_ids": ids, "attention_mask": mask}, y, g


def tokenize_collate(tokenizer: Any, max_length: int = 128, *, padding: bool | str = True) -> TokenizeCollate:
    """A ``collate_fn`` for :class:`TextDataset` that returns
    ``({"input_ids", "attention_mask"}, y, group)``, padded to the longest text in the
    batch (``padding="max_length"``: to ``max_length``) and truncated to ``max_length``."""
    return TokenizeCollate(tokenizer, max_length, padding)


@dataclass(frozen=True)
class ImageTransform:
    """How an image file becomes a model input: convert to RGB (``channels=3``) or grey
    (``channels=1``), resize to ``size = (H, W)`` (bilinear), scale to [0, 1], then
    subtract ``mean`` and divide by ``std`` per channel. Call it on a PIL image."""

    size: tuple[int, int] = (224, 224)
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self):
        try:
            size = tuple(int(s) for s in self.size)
            mean = tuple(float(m) for m in self.mean)
            std = tuple(float(s) for s in self.std)
            channels = int(self.channels)
        except (TypeError, ValueError) as e:
            raise InputError(f"image settings are malformed: {e}") from None
        if len(size) != 2 or min(size) < 1:
            raise InputError(f"image size must be two positive integers (H, W), got {self.size!r}")
        if channels not in (1, 3):
            raise InputError(f"image channels must be 1 or 3, got {self.channels!r}")
        if len(mean) != channels or len(std) != channels:
            raise InputError(f"image mean and std need {channels} value(s) each, got {list(mean)} and {list(std)}")
        if not all(np.isfinite(mean)) or not all(np.isfinite(s) and s > 0 for s in std):
            raise InputError(f"image mean must be finite and std positive, got {list(mean)} and {list(std)}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            # 16-bit greyscale: Pillow's convert("L") would clip at 255 rather than scale.
            a16 = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(np.rint(a16 / 257.0), 0, 255).astype(np.uint8))
        img = img.convert("RGB" if self.channels == 3 else "L")
        h, w = self.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(a))
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

    def to_meta(self) -> dict:
        """The settings in the form a model sidecar stores under ``meta["image"]``."""
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std), "channels": self.channels}


def image_transform_from_meta(meta: Mapping | None) -> ImageTransform:
    """Build the :class:`ImageTransform` a model sidecar describes.

    ``meta`` is either the whole sidecar (the settings under ``meta["image"]``) or that
    ``image`` dict itself: ``{"size": [H, W] or S, "mean": [...], "std": [...], "channels": C}``.
    Absent keys default to 224 x 224, 3 channels and ImageNet's mean/std (what
    torchvision's pretrained models expect); with 1 channel the default mean/std are
    the average of ImageNet's. ``None`` gives all defaults.
    """
    if meta is None:
        return ImageTransform()
    if not isinstance(meta, Mapping):
        raise InputError(f"image settings must be a mapping, got {type(meta).__name__}")
    d = meta["image"] if isinstance(meta.get("image"), Mapping) else meta
    channels = d.get("channels", 3)
    if channels == 1:
        default_mean, default_std = (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
    else:
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    size = d.get("size", (224, 224))
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    if not isinstance(size, Sequence) or isinstance(size, str):
        raise InputError(f"image size must be [H, W] or one integer, got {size!r}")
    mean, std = d.get("mean", default_mean), d.get("std", default_std)
    if isinstance(mean, (int, float)):
        mean = (mean,) * int(channels) if isinstance(channels, int) else (mean,)
    if isinstance(std, (int, float)):
        std = (std,) * int(channels) if isinstance(channels, int) else (std,)
    return ImageTransform(size=tuple(size), channels=channels, mean=tuple(mean), std=tuple(std))


class ImageDataset(GroupedDataset):
    """Rows of image files, decoded with Pillow when an item is asked for.

    ``paths`` are the files to read (already resolved against the table's folder);
    ``x`` is ``transform(image)``, a float32 ``(C, H, W)`` tensor. A file that cannot be
    read raises :class:`InputError` naming it and its row.
    """

    def __init__(self, paths: Any, labels: Any, group_ids: Any, *, transform: ImageTransform | None = None, **kw):
        super().__init__(labels, group_ids, **kw)
        p = np.asarray(paths, dtype=object)
        if p.shape != self.labels.shape:
            raise InputError(f"image paths must be 1-D with {len(self.labels)} rows, got shape {p.shape}")
        self.paths = p
        self.transform = transform if transform is not None else ImageTransform()

    def load_image(self, i: int) -> Image.Image:
        """The decoded PIL image of row ``i`` (not yet transformed).

        Pillow's decompression-bomb limit is always on: an image of more than
        ``Image.MAX_IMAGE_PIXELS`` pixels (Pillow's default when that is set to None) is
        refused before it is decoded, and ``DecompressionBombWarning`` is an error here.
        """
        i = self._index(i)
        path = self.paths[i]
        where = f"row {i}" + (f" of {self.source}" if self.source else "")
        limit = max_image_pixels()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    w, h = im.size
                    if w * h > limit:
                        raise _TooLarge(f"{w} x {h} = {w * h} pixels, more than the limit of {limit} "
                                        "(PIL.Image.MAX_IMAGE_PIXELS); a possible decompression bomb")
                    im.load()
                    return im.copy() if im.mode not in ("P", "PA") else im.convert("RGBA")
        except FileNotFoundError:
            raise InputError(f"image file {str(path)!r} ({where}) not found") from None
        except (_TooLarge, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            msg = " ".join(str(e).split())
            raise InputError(f"image file {str(path)!r} ({where}) is too large: {msg}") from None
        # Decoders raise a zoo of types on bad bytes (OSError, SyntaxError, ValueError,
        # struct.error, DecompressionBombError...); any failure here means "unreadable".
        except Exception as e:  # noqa: BLE001
            msg = " ".join(str(e).split()) or type(e).__name__
            raise InputError(f"cannot read image file {str(path)!r} ({where}): {msg}") from None

    def __getitem__(self, i: int):
        i = self._index(i)
        return self.transform(self.load_image(i)), self._y[i], self._g[i]


# Pillow's own default for Image.MAX_IMAGE_PIXELS (about 89.5 megapixels); used when a
# caller has switched the limit off by setting it to None.
_PILLOW_DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)


class _TooLarge(Exception):
    pass


def max_image_pixels() -> int:
    """The largest image, in pixels, that is decoded: ``PIL.Image.MAX_IMAGE_PIXELS``,
    or Pillow's default when that has been set to None (the limit is never off)."""
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else _PILLOW_DEFAULT_MAX_PIXELS


class TensorGroupDataset(GroupedDataset):
    """In-memory inputs (a tensor whose first dimension is the row) with labels and groups."""

    def __init__(self, inputs: torch.Tensor, labels: Any, group_ids: Any, **kw):
        super().__init__(labels, group_ids, **kw)
        x = torch.as_tensor(inputs)
        if x.ndim < 1 or x.shape[0] != len(self.labels):
            raise InputError(f"inputs must have {len(self.labels)} rows, got shape {tuple(x.shape)}")
        self.inputs = x

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, y, group)`` as whole tensors."""
        return self.inputs, self._y, self._g

    def __getitem__(self, i: int):
        i = self._index(i)
        return self.inputs[i], self._y[i], self._g[i]


# ---- load_dataset --------------------------------------------------------------------


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        names = list(value)
        dup = sorted({v for v in names if names.count(v) > 1})
        if dup:
            raise InputError(f"{what} column(s) named more than once: {dup}")
        return names
    raise InputError(f"{what} must be a column name or a list of names, got {value!r}")


def _as_encoder(enc: Any, cls: type, what: str):
    if enc is None or isinstance(enc, cls):
        return enc
    if isinstance(enc, Mapping):
        return cls.from_dict(enc)
    raise InputError(f"{what} must be a {cls.__name__} or its to_dict() form, got {type(enc).__name__}")


def _strings(s: pd.Series, what: str, source: str | None) -> np.ndarray:
    missing = s.isna().to_numpy()
    if missing.any():
        where = f" in {source}" if source else ""
        raise MissingValuesError(f"{what}{where} has {int(missing.sum())} missing value(s) of {len(s)} rows")
    return s.astype(str).to_numpy(dtype=object)


def load_dataset(
    path_or_df: str | os.PathLike | pd.DataFrame,
    *,
    label: str,
    sensitive: str | Sequence[str],
    features: Sequence[str] | None = None,
    text: str | None = None,
    image: str | None = None,
    feature_encoder: FeatureEncoder | Mapping | None = None,
    label_classes: Sequence[Any] | LabelEncoder | Mapping | None = None,
    group_encoder: GroupEncoder | Mapping | None = None,
    image_meta: Mapping | None = None,
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    allow_outside_paths: bool = False,
) -> TabularDataset | TextDataset | ImageDataset:
    """Load a table (a CSV/Parquet path or a DataFrame) as a dataset of ``(x, y, group)``.

    - ``text=COL``: a :class:`TextDataset` of that column's strings;
    - ``image=COL``: an :class:`ImageDataset` of that column's file paths, relative to
      ``base_dir`` (default: the table's folder, or the working directory for a
      DataFrame), transformed as ``image_meta`` says (see :func:`image_transform_from_meta`);
      with ``check_files`` every file's existence is checked up front. A path that leads
      out of ``base_dir`` (``../``, an absolute path elsewhere, a symlink pointing out)
      is refused unless ``allow_outside_paths=True``: a table from elsewhere must not be
      able to make us read any file on the machine;
    - otherwise a :class:`TabularDataset` of ``features`` (default: every column but
      the label and sensitive ones, or the fitted ``feature_encoder``'s columns) encoded
      by ``feature_encoder`` (fitted here if not given or not yet fitted).

    ``sensitive`` is one column or several (their combinations are the groups).
    ``label_classes`` (a class list, a fitted :class:`LabelEncoder` or its dict) and a
    fitted ``group_encoder`` re-use a training set's encodings on new data; without them
    they are learned from this table. Every problem raises a
    :class:`~reprogram.errors.ReprogramError` with one line that says what is wrong.
    """
    if text is not None and image is not None:
        raise InputError("give either a text column or an image column, not both")
    if isinstance(path_or_df, pd.DataFrame):
        df = path_or_df
        source = None
        default_base = Path.cwd()
    elif isinstance(path_or_df, (str, os.PathLike)):
        df = read_table(path_or_df)
        source = os.fspath(path_or_df)
        default_base = Path(path_or_df).resolve().parent
    else:
        raise InputError(f"data must be a table path or a pandas DataFrame, got {type(path_or_df).__name__}")

    if not all(isinstance(c, str) for c in df.columns):
        df = df.set_axis([str(c) for c in df.columns], axis=1)
    dup = df.columns[df.columns.duplicated()]
    if len(dup):
        raise InputError(f"the table has column names used more than once: {sorted(set(dup))[:10]}")

    label_col = _names(label, "label")
    if len(label_col) != 1:
        raise InputError(f"label must be one column name, got {label!r}")
    label_col = label_col[0]
    sens_cols = _names(sensitive, "sensitive")
    if not sens_cols:
        raise InputError("give at least one sensitive column")
    require_columns(df, label_col, role="label column", source=source)
    require_columns(df, sens_cols, role="sensitive column", source=source)
    if label_col in sens_cols:
        raise InputError(f"column {label_col!r} is named both as the label and as a sensitive column")
    for col, role in ((text, "text"), (image, "image")):
        if col is not None:
            if not isinstance(col, str):
                raise InputError(f"{role} must be one column name, got {col!r}")
            require_columns(df, col, role=f"{role} column", source=source)
            if col == label_col or col in sens_cols:
                raise InputError(f"column {col!r} cannot be both the {role} column and the label or a sensitive column")
    if len(df) == 0:
        raise InputError(f"the table{' ' + repr(source) if source else ''} has no rows")

    where = f" in {source}" if source else ""
    lab_enc = label_classes.tolist() if isinstance(label_classes, np.ndarray) else label_classes
    if lab_enc is not None and not isinstance(lab_enc, (LabelEncoder, Mapping)):
        if isinstance(lab_enc, str) or not isinstance(lab_enc, Sequence):
            raise InputError(f"label_classes must be a list of classes, got {lab_enc!r}")
        lab_enc = LabelEncoder.from_classes(lab_enc)
    lab_enc = _as_encoder(lab_enc, LabelEncoder, "label_classes")
    y_values = df[label_col]
    try:
        if lab_enc is None:
            lab_enc = LabelEncoder()
            y = lab_enc.fit_transform(y_values, what=f"label column {label_col!r}{where}")
        else:
            y = lab_enc.transform(y_values, what=f"label column {label_col!r}{where}")
    except TypeError as e:  # unhashable cell values in a DataFrame built in memory
        raise InputError(f"label column {label_col!r} holds values that cannot be classes: {e}") from None

    grp_enc = _as_encoder(group_encoder, GroupEncoder, "group_encoder")
    sens_frame = pd.DataFrame({c: as_plain_values(df[c]) for c in sens_cols})
    try:
        if grp_enc is None:
            grp_enc = GroupEncoder()
            g = grp_enc.fit_transform(sens_frame)
        else:
            g = grp_enc.transform(sens_frame)
    except TypeError as e:
        raise InputError(f"sensitive columns {sens_cols} hold values that cannot be groups: {e}") from None
    except NotFittedError:
        raise InputError("group_encoder is not fitted; pass a fitted one or none") from None

    common = dict(groups=grp_enc, classes=lab_enc.classes_, label_encoder=lab_enc, source=source)
    if text is not None:
        return TextDataset(_strings(df[text], f"text column {text!r}", source), y, g, **common)
    if image is not None:
        rel = _strings(df[image], f"image column {image!r}", source)
        base = Path(base_dir).resolve() if base_dir is not None else default_base
        paths = _resolve(rel, base)
        if not allow_outside_paths:
            _check_inside(paths, base, source, image)
        if check_files:
            _check_files_exist(paths, source)
        return ImageDataset(paths, y, g, transform=image_transform_from_meta(image_meta), **common)

    feat_enc = _as_encoder(feature_encoder, FeatureEncoder, "feature_encoder")
    fitted = feat_enc is not None and hasattr(feat_enc, "feature_names_out_")
    if features is not None:
        feat_cols = _names(features, "features")
        require_columns(df, feat_cols, role="feature column", source=source)
        if label_col in feat_cols:
            raise InputError(f"the label column {label_col!r} cannot also be a feature")
        if fitted and list(feat_cols) != list(feat_enc.columns_):
            raise InputError(f"features {feat_cols} differ from the fitted encoding's columns {feat_enc.columns_}")
    elif fitted:
        feat_cols = list(feat_enc.columns_)
    else:
        taken = {label_col, *sens_cols}
        feat_cols = [c for c in df.columns if c not in taken]
        if not feat_cols:
            raise InputError(f"the table{where} has no feature columns besides the label and sensitive ones")
    if fitted:
        X = feat_enc.transform(df, source=source)
    else:
        feat_enc = feat_enc if feat_enc is not None else FeatureEncoder()
        X = feat_enc.fit_transform(df, feat_cols, source=source)
    return TabularDataset(X, y, g, feature_encoder=feat_enc, **common)


def _resolve(rel: np.ndarray, base: Path) -> np.ndarray:
    """Paths relative to ``base`` made absolute; absolute ones kept as they are."""
    s = pd.Series(rel, dtype=object)
    pattern = r"^(?:[\\/]|[A-Za-z]:[\\/])" if os.name == "nt" else r"^/"
    is_abs = s.str.contains(pattern, regex=True).to_numpy(dtype=bool)
    return np.where(is_abs, rel, str(base) + os.sep + s.to_numpy(dtype=object)).astype(object)


def _check_inside(paths: np.ndarray, base: Path, source: str | None, column: str) -> None:
    """Refuse image paths that resolve (symlinks followed) outside ``base``."""
    root = os.path.realpath(base)
    prefix = root if root.endswith(os.sep) else root + os.sep
    for i, p in enumerate(paths):
        try:
            real = os.path.realpath(p)
        except (ValueError, OSError) as e:  # a NUL byte, a symlink loop...
            where = f" of {source}" if source else ""
            raise InputError(f"image path {str(p)!r} (row {i}{where}) is not a usable path: {e}") from None
        if real != root and not real.startswith(prefix):
            where = f" of {source}" if source else ""
            raise InputError(
                f"image path {str(paths[i])!r} (row {i}{where}, column {column!r}) leads outside the table's folder "
                f"{root}; image paths must stay inside it (pass --allow-outside-paths, or allow_outside_paths=True, "
                "to read files elsewhere)"
            )


def _check_files_exist(paths: np.ndarray, source: str | None) -> None:
    # One stat per file: cheap next to decoding them, and it fails before training starts
    # instead of minutes into the first epoch.
    exists = np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
    if not exists.all():
        bad = np.flatnonzero(~exists)
        where = f" of {source}" if source else ""
        raise InputError(
            f"image file {str(paths[bad[0]])!r} (row {int(bad[0])}{where}) not found; "
            f"{bad.size} of {len(paths)} image files are missing"
        )


def load_dataset_like(
    path_or_df: str | os.PathLike | pd.DataFrame,
    meta: Mapping | None,
    *,
    label: str,
    sensitive: str | Sequence[str],
    text: str | None = None,
    image: str | None = None,
    group_encoder: GroupEncoder | Mapping | None = None,
    base_dir: str | os.PathLike | None = None,
    allow_outside_paths: bool = False,
) -> TabularDataset | TextDataset | ImageDataset:
    """Load a table the way a frozen model expects it, from the model's sidecar ``meta``.

    The model's feature encoding (``meta["features"]``), class order (``meta["classes"]``)
    and image settings (``meta["image"]``) are reused, so the rows reach the model exactly
    as its training data did. The input kind follows ``meta["input_kind"]``: a text model
    needs ``text=``, an image model ``image=``.
    """
    meta = dict(meta or {})
    kind = meta.get("input_kind")
    if kind == "text" and text is None:
        raise InputError("this model reads text: give the text column (--text COL)")
    if kind == "image" and image is None:
        raise InputError("this model reads images: give the image path column (--image COL)")
    if kind == "tabular" and (text is not None or image is not None):
        raise InputError("this model reads tabular features, not a text or image column")
    kw: dict[str, Any] = {"text": text, "image": image, "group_encoder": group_encoder, "base_dir": base_dir,
                          "allow_outside_paths": allow_outside_paths}
    if meta.get("classes"):
        kw["label_classes"] = list(meta["classes"])
    if kind in (None, "tabular") and meta.get("features"):
        kw["feature_encoder"] = meta["features"]
    if image is not None:
        kw["image_meta"] = meta.get("image")
    return load_dataset(path_or_df, label=label, sensitive=sensitive, **kw)
