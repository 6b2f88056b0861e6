"""``GroupCalibrator``: one calibration map per (intersectional) group, with fallbacks.

A score of 0.7 should mean 70% in every group; a single global map cannot give that
when the model is miscalibrated differently per group, so each group gets its own map.
Small groups cannot support their own map: they borrow their *parent's* map (the
largest group obtained by dropping one sensitive column: ``sex=F|race=B`` falls back to
``sex=F`` or ``race=B``, a one-column group to the global map), and ``shrinkage`` blends
a group's map with its parent's by group size, empirical-Bayes style:

    calibrated = w * map_group(s) + (1 - w) * map_parent(s),   w = n / (n + shrinkage)

Groups not seen when fitting get the global map at inference, counted in a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from itertools import combinations
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from reprogram.calibrate.bank import MapBank
from reprogram.calibrate.maps import MAPS, CalibrationMap, SoftmaxTemperatureModule, make_map, renormalize_torch
from reprogram.calibrate.scores import check_labels, check_scores
from reprogram.data.groups import GroupEncoder
from reprogram.errors import GroupError, InputError, NotFittedError

__all__ = ["GroupCalibrator", "GroupCalibratorModule"]

GLOBAL = "(global)"  # parenthesised: no group value can be mistaken for it


def _usable(y: np.ndarray, n_classes: int) -> str | None:
    """Why labels ``y`` cannot support a map (None if they can): every class must occur."""
    counts = np.bincount(y, minlength=n_classes)
    if (counts == 0).any():
        present = np.flatnonzero(counts)
        if len(present) == 1:
            return f"only class {int(present[0])} present"
        return f"class(es) {', '.join(str(int(k)) for k in np.flatnonzero(counts == 0))} absent"
    return None


def _rows_by_key(keys: np.ndarray, n_keys: int):
    """``(key, row indices)`` for every key present: one stable sort, no pass per key."""
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=n_keys)
    start = 0
    for k, c in enumerate(counts):
        if c:
            yield k, order[start:start + c]
        start += c


class GroupCalibrator(BaseEstimator):
    """One calibration map per group of the sensitive columns (see the module docstring).

    Parameters
    ----------
    method : "auto", a map name ("platt", "isotonic", "temperature", "beta",
        "histogram"), or a dict ``{group name: map name}`` (groups not named use "auto").
        "auto" picks isotonic where a group has at least ``isotonic_min_size`` rows and
        ``isotonic_min_size // 10`` of its rarer class, else Platt (binary) or
        temperature (multi-class).
    min_group_size : groups with fewer rows (or with a single class) use their parent's map.
    shrinkage : pseudo-count blending a group's map with its parent's (0: no blending).
    fallback : if False, a group that would fall back raises GroupError instead.
    n_bins : bins of histogram maps.

    Fitted attributes: ``groups_`` (group names; the ONNX ``group`` input indexes this
    list), ``encoder_``, ``maps_`` (the fitted maps by key: "global", group or parent
    name), ``map_of_group_`` and ``parent_of_group_`` (key per group), ``weights_``
    (blend weight per group), ``methods_`` (map name per group), ``fallbacks_`` (group ->
    reason), ``group_sizes_``, ``n_classes_``.
    """

    def __init__(self, method: str | Mapping[str, str] = "auto", min_group_size: int = 50,
                 isotonic_min_size: int = 1000, shrinkage: float = 0.0, fallback: bool = True, n_bins: int = 10):
        self.method = method
        self.min_group_size = min_group_size
        self.isotonic_min_size = isotonic_min_size
        self.shrinkage = shrinkage
        self.fallback = fallback
        self.n_bins = n_bins

    # --- fitting ---------------------------------------------------------------------
    def _check_params(self) -> None:
        names = list(self.method.values()) if isinstance(self.method, Mapping) else [self.method]
        for name in names:
            if name != "auto" and name not in MAPS:
                raise InputError(f"unknown calibration method {name!r}; use auto or one of {', '.join(MAPS)}")
        if not isinstance(self.min_group_size, (int, np.integer)) or self.min_group_size < 1:
            raise InputError(f"min_group_size must be a positive integer, not {self.min_group_size!r}")
        if not (isinstance(self.shrinkage, (int, float)) and self.shrinkage >= 0):
            raise InputError(f"shrinkage must be a number >= 0, not {self.shrinkage!r}")

    def _method_for(self, key: str, y: np.ndarray) -> str:
        name = self.method.get(key, "auto") if isinstance(self.method, Mapping) else self.method
        if name != "auto":
            return name
        rare = np.bincount(y, minlength=self.n_classes_).min()
        if len(y) >= self.isotonic_min_size and rare >= self.isotonic_min_size // 10:
            return "isotonic"
        return "platt" if self.n_classes_ == 2 else "temperature"

    def _new_map(self, name: str) -> CalibrationMap:
        return make_map(name, n_bins=self.n_bins) if name == "histogram" else make_map(name)

    def fit(self, scores: Any, y: Any, sensitive: Any) -> GroupCalibrator:
        self._check_params()
        s = check_scores(scores)
        yy = check_labels(y, s)
        self.n_classes_ = 2 if s.ndim == 1 else s.shape[1]
        enc = GroupEncoder()
        codes = np.asarray(enc.fit_transform(sensitive), dtype=np.int64)
        if len(codes) != len(s):
            raise InputError(f"sensitive features have {len(codes)} rows but scores have {len(s)}")
        self.encoder_ = enc
        self.groups_ = list(enc.names_)
        n_cols = len(enc.columns_)
        # level code of each column for each group, to find the rows of parent groups
        decoded = np.zeros((len(self.groups_), n_cols), dtype=np.int64)
        for g, combo in enumerate(enc.to_dict()["combos"]):
            for j in range(n_cols - 1, -1, -1):
                combo, decoded[g, j] = divmod(combo, len(enc.levels_[j]))

        self.maps_: dict[str, CalibrationMap] = {}
        self.methods_: dict[str, str] = {}
        self.fallbacks_: dict[str, str] = {}
        usable_cache: dict[tuple, str | None] = {}

        def key_name(key: tuple) -> str:
            if not key:
                return GLOBAL
            parts = [(enc.columns_[j], enc.levels_[j][v]) for j, v in key]
            if n_cols == 1:
                return str(parts[0][1])
            return "|".join(f"{c}={v}" for c, v in parts)

        # row indices per group from one stable sort; a parent's rows are its groups' rows
        by_group = dict(_rows_by_key(codes, len(self.groups_)))
        everyone = np.arange(len(s))
        rows_cache: dict[tuple, np.ndarray] = {}

        def rows_of(key: tuple) -> np.ndarray:
            if not key:
                return everyone
            if key not in rows_cache:
                match = np.all([decoded[:, j] == v for j, v in key], axis=0)
                parts = [by_group[g] for g in np.flatnonzero(match) if g in by_group]
                rows_cache[key] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            return rows_cache[key]

        def problem(key: tuple) -> str | None:
            if key not in usable_cache:
                rows = rows_of(key)
                if len(rows) < self.min_group_size:
                    usable_cache[key] = f"{len(rows)} rows < min_group_size {self.min_group_size}"
                else:
                    usable_cache[key] = _usable(yy[rows], self.n_classes_)
            return usable_cache[key]

        def fit_key(key: tuple) -> str:
            name = key_name(key)
            if name not in self.maps_:
                rows = rows_of(key)
                method = self._method_for(name, yy[rows])
                self.maps_[name] = self._new_map(method).fit(s[rows], yy[rows])
                self.methods_[name] = method
            return name

        def parent_of(key: tuple) -> tuple:
            if len(key) <= 1:
                return ()
            subsets = list(combinations(key, len(key) - 1))
            return max(subsets, key=lambda k: len(rows_of(k)))

        def resolve(key: tuple) -> str:
            """The nearest usable map: the key's own, else its parent's, up to the global map."""
            while key and problem(key) is not None:
                key = parent_of(key)
            return fit_key(key)

        global_problem = _usable(yy, self.n_classes_)
        if global_problem is not None:
            raise InputError(f"cannot calibrate: {global_problem} in the labels")
        fit_key(())
        self.map_of_group_, self.parent_of_group_, self.weights_, self.group_sizes_ = [], [], [], []
        for g, name in enumerate(self.groups_):
            key = tuple((j, int(decoded[g, j])) for j in range(n_cols))
            n = len(by_group.get(g, ()))
            self.group_sizes_.append(n)
            why = problem(key)
            if why is not None:
                if not self.fallback or (isinstance(self.method, Mapping) and name in self.method):
                    raise GroupError(f"group {name!r} cannot be calibrated on its own: {why}")
                used = resolve(parent_of(key))
                self.fallbacks_[name] = f"uses {used!r}: {why}"
                self.map_of_group_.append(used)
                self.parent_of_group_.append(used)
                self.weights_.append(1.0)
            else:
                own = fit_key(key)
                self.map_of_group_.append(own)
                if self.shrinkage > 0:
                    self.parent_of_group_.append(resolve(parent_of(key)))
                    self.weights_.append(n / (n + float(self.shrinkage)))
                else:
                    self.parent_of_group_.append(own)
                    self.weights_.append(1.0)
        self.methods_ = {**{g: self.methods_[m] for g, m in zip(self.groups_, self.map_of_group_)}, GLOBAL:
                         self.methods_[GLOBAL]}
        return self

    # --- applying --------------------------------------------------------------------
    def _codes(self, sensitive: Any, n: int) -> np.ndarray:
        codes = np.asarray(self.encoder_.transform(sensitive, unknown="code"), dtype=np.int64)
        if len(codes) != n:
            raise InputError(f"sensitive features have {len(codes)} rows but scores have {n}")
        unknown = int((codes < 0).sum())
        if unknown:
            warnings.warn(f"{unknown} row(s) belong to groups not seen when fitting; they get the global map",
                          stacklevel=3)
        return codes

    def transform(self, scores: Any, sensitive: Any) -> np.ndarray:
        self._check_fitted()
        s = check_scores(scores)
        if (2 if s.ndim == 1 else s.shape[1]) != self.n_classes_:
            raise InputError(f"scores have {2 if s.ndim == 1 else s.shape[1]} classes; fitted on {self.n_classes_}")
        return self._transform_codes(s, self._codes(sensitive, len(s)))

    def _transform_codes(self, s: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The transform of checked scores ``s`` for group ids ``codes`` (-1: unknown group)."""
        g = len(self.groups_)
        codes = np.where((codes < 0) | (codes >= g), g, codes)  # unknown -> the extra last entry: global
        names = list(self.maps_)
        slot = {name: i for i, name in enumerate(names)}
        dtype = np.int16 if len(names) < 2**15 else np.int64  # small ints: numpy's stable sort is a radix sort
        mine = np.array([slot[n] for n in self.map_of_group_] + [slot[GLOBAL]], dtype=dtype)[codes]
        out = np.empty_like(s)
        for i, rows in _rows_by_key(mine, len(names)):
            out[rows] = self.maps_[names[i]]._apply(s[rows])
        w = np.array(self.weights_ + [1.0])[codes]
        if (w < 1).any():
            blended = np.flatnonzero(w < 1)
            parent = np.array([slot[n] for n in self.parent_of_group_] + [slot[GLOBAL]], dtype=dtype)[codes[blended]]
            for i, rows in _rows_by_key(parent, len(names)):
                at = blended[rows]
                ww = w[at, None] if s.ndim == 2 else w[at]
                out[at] = ww * out[at] + (1 - ww) * self.maps_[names[i]]._apply(s[at])
        return out

    def __call__(self, scores: Any, sensitive: Any) -> np.ndarray:
        return self.transform(scores, sensitive)

    def fit_transform(self, scores: Any, y: Any, sensitive: Any) -> np.ndarray:
        return self.fit(scores, y, sensitive).transform(scores, sensitive)

    def to_module(self) -> GroupCalibratorModule:
        """``forward(score, group)``: the same map in torch; ``group`` indexes ``groups_`` (-1: unknown)."""
        self._check_fitted()
        return GroupCalibratorModule(self)

    # --- persistence -----------------------------------------------------------------
    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, maps = {}, {}
        for i, (name, m) in enumerate(self.maps_.items()):
            t, meta = m._state()
            tensors.update({f"m{i}.{k}": v for k, v in t.items()})
            maps[name] = {"index": i, **meta}
        params = self.get_params()
        meta = {
            "calibrator": type(self).__name__, "params": params, "n_classes": self.n_classes_,
            "groups": self.groups_, "encoder": self.encoder_.to_dict(), "maps": maps,
            "map_of_group": self.map_of_group_, "parent_of_group": self.parent_of_group_,
            "weights": self.weights_, "methods": self.methods_, "fallbacks": self.fallbacks_,
            "group_sizes": self.group_sizes_,
        }
        return tensors, meta

    @classmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> GroupCalibrator:
        obj = cls(**meta["params"])
        obj.n_classes_ = int(meta["n_classes"])
        obj.encoder_ = GroupEncoder.from_dict(meta["encoder"])
        obj.groups_ = list(meta["groups"])
        obj.maps_ = {}
        for name, m in meta["maps"].items():
            prefix = f"m{m['index']}."
            sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            obj.maps_[name] = MAPS_BY_CLASS[m["calibrator"]]._from_state(sub, m)
        obj.map_of_group_ = list(meta["map_of_group"])
        obj.parent_of_group_ = list(meta["parent_of_group"])
        obj.weights_ = [float(w) for w in meta["weights"]]
        obj.methods_ = dict(meta["methods"])
        obj.fallbacks_ = dict(meta["fallbacks"])
        obj.group_sizes_ = [int(n) for n in meta["group_sizes"]]
        if len(obj.map_of_group_) != len(obj.groups_) or not set(obj.map_of_group_) <= set(obj.maps_):
            raise ValueError("groups and maps do not match")
        return obj

    def save(self, path: str | os.PathLike) -> None:
        from reprogram.calibrate.artifacts import save_calibrator

        save_calibrator(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GroupCalibrator:
        from reprogram.calibrate.artifacts import load_calibrator

        obj = load_calibrator(path)
        if not isinstance(obj, cls):
            raise InputError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    def _check_fitted(self) -> None:
        if not hasattr(self, "maps_"):
            raise NotFittedError("this GroupCalibrator is not fitted yet: call fit() first")


MAPS_BY_CLASS = {cls.__name__: cls for cls in MAPS.values()}


class GroupCalibratorModule(nn.Module):
    """Torch form of a fitted :class:`GroupCalibrator`: ``forward(score, group)``.

    All groups' maps sit in one :class:`MapBank`; each row looks up its group's tables
    (binary: one table; multi-class one-vs-rest: one per class) or its group's
    temperature, so the cost is O(N log K) whatever the number of groups. ``group`` is
    an index into ``groups_``; -1 or any index past the end means "unknown group" and
    gets the global map.
    """

    def __init__(self, cal: GroupCalibrator):
        super().__init__()
        names = list(cal.maps_)
        slot = {name: i for i, name in enumerate(names)}
        tables, offsets, temps, is_temp = [], [], [], []
        for name in names:
            m = cal.maps_[name]
            offsets.append(len(tables))
            native = m.multiclass_native and cal.n_classes_ > 2
            is_temp.append(native)
            temps.append(m.temperature_ if native else 1.0)
            tables.extend(m.tables_)
        self.n_classes = cal.n_classes_
        self.n_groups = len(cal.groups_)
        self.blend = any(w < 1 for w in cal.weights_)
        self.has_tables = bool(tables)
        self.has_temp = any(is_temp)
        self.bank = MapBank(tables) if tables else None
        g_slot = [slot[n] for n in cal.map_of_group_] + [slot[GLOBAL]]
        p_slot = [slot[n] for n in cal.parent_of_group_] + [slot[GLOBAL]]
        last = max(len(tables) - 1, 0)  # a temperature slot has no tables: any valid index will do
        # per group (+ the unknown entry): its first table and its map's slot, looked up once
        self.register_buffer("base", torch.tensor([min(offsets[i], last) for i in g_slot], dtype=torch.int64))
        self.register_buffer("parent_base", torch.tensor([min(offsets[i], last) for i in p_slot], dtype=torch.int64))
        self.register_buffer("slot", torch.tensor(g_slot, dtype=torch.int64))
        self.register_buffer("parent_slot", torch.tensor(p_slot, dtype=torch.int64))
        self.register_buffer("weight", torch.tensor(cal.weights_ + [1.0], dtype=torch.float32))
        self.softmax_t = SoftmaxTemperatureModule(torch.tensor(temps))
        self.register_buffer("is_temp", torch.tensor(is_temp, dtype=torch.bool))
        self.register_buffer("classes", torch.arange(max(self.n_classes, 2), dtype=torch.int64))

    def _apply(self, score: torch.Tensor, g: torch.Tensor, parent: bool) -> torch.Tensor:
        base = (self.parent_base if parent else self.base)[g]
        if self.n_classes == 2:
            return self.bank(score, base)
        out = torch.zeros_like(score)
        if self.has_tables:
            table = (base.unsqueeze(-1) + self.classes).clamp(max=self.bank.n_tables - 1)
            out = renormalize_torch(self.bank(score, table))
        if self.has_temp:
            slot = (self.parent_slot if parent else self.slot)[g]
            out = torch.where(self.is_temp[slot].unsqueeze(-1), self.softmax_t(score, slot), out)
        return out

    def forward(self, score: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        known = (group >= 0) & (group < self.n_groups)
        g = torch.where(known, group, torch.full_like(group, self.n_groups))  # unknown: the global map
        out = self._apply(score, g, parent=False)
        if self.blend:
            w = self.weight[g]
            if self.n_classes > 2:
                w = w.unsqueeze(-1)
            out = w * out + (1 - w) * self._apply(score, g, parent=True)
        return out
