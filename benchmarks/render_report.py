"""Render the three example saliency reports and screenshot them in headless Chromium.

Question: does `reprogram explain` make a page a reader can use — tables that fit,
heatmaps that can be read, legends where they are needed — for each input kind?

Builds three models and triggers the way a user would, through the `reprogram` command:

* image — ``reprogram demo`` (the spurious-digits CNN and its border trigger, test table
  of PNG files);
* tabular — a small MLP on COMPAS (African-American vs Caucasian defendants), ``reprogram
  train``, a feature trigger for demographic parity by ``reprogram fit``, and a group
  calibrator (``reprogram apply`` + ``reprogram calibrate``) for the reliability diagram;
* text — a tiny BERT built offline (``save_pretrained`` + a word-level tokenizer),
  fine-tuned with ``reprogram train --text`` on short reviews where a dialect word goes
  with the group and, in training, with the label; a prompt trigger by ``reprogram fit``;

then writes each report with ``reprogram explain`` and takes a screenshot
(``chromium --headless --screenshot``). Debian's ``chromium`` is installed with apt-get
when missing (``--no-screenshot`` skips it). Reports (``<part>_report.html``) and screenshots (``<part>_report.png``) go to ``--out``
(default ``benchmarks/results``, models and data under its ``render_work/``); a table and
``render_report.json`` summarise them.

    python benchmarks/render_report.py [--parts image,tabular,text] [--samples 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("image", "tabular", "text")


def cli(*args) -> None:
    """Run one `reprogram` command in-process; stop with its output if it fails."""
    from reprogram.cli import main

    args = [str(a) for a in args]
    print("$ reprogram " + " ".join(args), flush=True)
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    if code:
        raise SystemExit(f"`reprogram {args[0]}` failed with exit code {code}")


# ---- the three examples ----------------------------------------------------------------


def image_example(work: Path, out: Path, samples: int, quick: bool) -> Path:
    demo = work / "demo"
    art_file = demo / "artifacts.json"
    art = json.loads(art_file.read_text()) if art_file.is_file() else {}
    if not all(art.get(k) and Path(art[k]).exists() for k in ("model", "trigger", "test_table")):  # none yet, or moved
        cli("demo", "--out", demo, "--device", "cpu")
        art = json.loads(art_file.read_text())
    report = out / "image_report.html"
    cli("explain", "--model", art["model"], "--trigger", art["trigger"], "--data", art["test_table"],
        "--image", "path", "--label", "label", "--sensitive", "group", "--samples", samples, "--out", report,
        "--device", "cpu")
    return report


def tabular_example(work: Path, out: Path, samples: int, quick: bool) -> Path:
    from reprogram.data import load_real_dataset, split_frame

    d = load_real_dataset("compas")
    frame = d.frame[d.frame["race"].isin(["African-American", "Caucasian"])]
    frame = frame[[*d.features, "race", d.label]].reset_index(drop=True)
    parts = split_frame(frame, (0.5, 0.25, 0.25), stratify=[d.label], seed=0)
    paths = {}
    for name, part in zip(("train", "tune", "test"), parts):
        paths[name] = work / f"compas_{name}.csv"
        part.to_csv(paths[name], index=False)
    ckpt, trig, preds, calib = (work / n for n in ("compas_mlp.pt", "compas_trigger", "compas_tune_preds.csv",
                                                   "compas_calib"))
    epochs = "5" if quick else "20"
    cli("train", "--data", paths["train"], "--label", d.label, "--sensitive", "race", "--hidden", "64,32",
        "--epochs", epochs, "--lr", "0.003", "--out", ckpt, "--device", "cpu")
    cli("fit", "--model", ckpt, "--data", paths["tune"], "--label", d.label, "--sensitive", "race",
        "--trigger", "feature", "--criterion", "dp", "--lambda", "2", "--epochs", epochs, "--out", trig,
        "--device", "cpu")
    cli("apply", "--model", ckpt, "--trigger", trig, "--data", paths["tune"], "--keep", d.label, "race",
        "--out", preds, "--device", "cpu")
    cli("calibrate", "--predictions", preds, "--score", "score", "--label", d.label, "--sensitive", "race",
        "--out", calib)
    report = out / "tabular_report.html"
    cli("explain", "--model", ckpt, "--trigger", trig, "--calibrator", calib, "--data", paths["test"],
        "--label", d.label, "--sensitive", "race", "--samples", samples, "--out", report, "--device", "cpu")
    return report


WORDS_POS = "good great fine lovely fun nice".split()
WORDS_NEG = "bad awful boring dull poor weak".split()
FILLER = "the a movie film plot was is very quite really and but".split()
DIALECT = {"north": "aye", "south": "yall"}


def tiny_bert(d: Path) -> Path:
    """A two-layer, 32-wide BERT over a word vocabulary, with its tokenizer, saved in ``d``."""
    import torch

    from reprogram.models import prepare_transformers

    transformers = prepare_transformers()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS_POS, *WORDS_NEG, *FILLER, *DIALECT.values()]
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                                     num_labels=2, id2label={0: "negative", 1: "positive"},
                                     label2id={"negative": 0, "positive": 1})
    transformers.BertForSequenceClassification(config).eval().save_pretrained(d)
    (d.parent / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(str(d.parent / "vocab.txt")).save_pretrained(d)
    return d


def reviews(n: int, rng: np.random.Generator, agree: float) -> pd.DataFrame:
    """Short reviews; the sentiment word decides the label, except that in a share of
    rows it is missing and only the dialect word (which agrees with the label in a share
    ``agree`` of rows) is left to go on."""
    y = rng.integers(0, 2, n)
    same = rng.random(n) < agree
    group = np.where(same == (y == 1), "south", "north")
    rows = []
    for yi, g in zip(y, group):
        words = list(rng.choice(FILLER, 4))
        if rng.random() < 0.7:
            words.insert(int(rng.integers(0, 4)), rng.choice(WORDS_POS if yi else WORDS_NEG))
        words.insert(int(rng.integers(0, len(words))), DIALECT[g])
        rows.append(" ".join(words))
    return pd.DataFrame({"text": rows, "label": np.where(y == 1, "positive", "negative"), "group": group})


def text_example(work: Path, out: Path, samples: int, quick: bool) -> Path:
    rng = np.random.default_rng(0)
    base = tiny_bert(work / "bert" / "base")
    paths = {}
    for name, n, agree in (("train", 1200, 0.9), ("tune", 500, 0.5), ("test", 400, 0.5)):
        paths[name] = work / f"reviews_{name}.csv"
        reviews(n, rng, agree).to_csv(paths[name], index=False)
    model, trig = work / "bert" / "trained", work / "reviews_trigger"
    epochs = "2" if quick else "6"
    cli("train", "--data", paths["train"], "--text", "text", "--label", "label", "--sensitive", "group",
        "--arch", base, "--epochs", epochs, "--lr", "0.003", "--batch-size", "32", "--max-length", "16",
        "--out", model, "--device", "cpu")
    cli("fit", "--model", model, "--data", paths["tune"], "--text", "text", "--label", "label", "--sensitive",
        "group", "--trigger", "prompt", "--size", "3", "--criterion", "eo", "--epochs", epochs, "--lr", "0.1",
        "--out", trig, "--device", "cpu")
    report = out / "text_report.html"
    cli("explain", "--model", model, "--trigger", trig, "--data", paths["test"], "--text", "text", "--label", "label",
        "--sensitive", "group", "--samples", samples, "--out", report, "--device", "cpu")
    return report


# ---- screenshots -------------------------------------------------------------------------


def find_chromium(install: bool) -> str | None:
    """The chromium binary; with ``install``, apt-get installs Debian's package when missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if not install or not shutil.which("apt-get"):
        return None
    print("chromium not found: apt-get install -y chromium", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, capture_output=True)
    return shutil.which("chromium")


def screenshot(chromium: str, page: Path, png: Path, size: str) -> bool:
    """A full-width screenshot of ``page`` (``size`` = "W,H" pixels of the window)."""
    base = [chromium, "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()]
    for headless in ("--headless=new", "--headless"):  # old builds know only the plain flag
        png.unlink(missing_ok=True)
        proc = subprocess.run([base[0], headless, *base[1:]], check=False, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 and png.is_file() and png.stat().st_size > 0:
            return True
    print(f"screenshot of {page} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--samples", type=int, default=4, help="inputs explained per group")
    ap.add_argument("--window", default="1400,3000", help="screenshot window W,H in pixels")
    ap.add_argument("--quick", action="store_true", help="fewer training epochs (a smoke run)")
    ap.add_argument("--no-screenshot", action="store_true", help="write the reports only")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    out = args.out
    work = out / "render_work"
    work.mkdir(parents=True, exist_ok=True)
    chromium = None if args.no_screenshot else find_chromium(install=True)
    if not args.no_screenshot and chromium is None:
        print("no chromium: writing the reports without screenshots", flush=True)
    makers = {"image": image_example, "tabular": tabular_example, "text": text_example}
    rows = []
    for part in parts:
        t0 = time.perf_counter()
        page = makers[part](work, out, args.samples, args.quick)
        seconds = time.perf_counter() - t0
        png = out / f"{part}_report.png"
        shot = bool(chromium) and screenshot(chromium, page, png, args.window)
        html = page.read_text(encoding="utf-8")
        rows.append({"part": part, "report": str(page), "screenshot": str(png) if shot else None,
                     "html_bytes": len(html.encode()), "images": html.count("<img "), "seconds": round(seconds, 1)})
    print()
    print(f"{'part':8s} {'images':>6s} {'size':>9s} {'seconds':>8s}  screenshot")
    for r in rows:
        print(f"{r['part']:8s} {r['images']:6d} {r['html_bytes'] / 1e6:8.2f}M {r['seconds']:8.1f}  "
              f"{r['screenshot'] or '-'}")
    summary = out / "render_report.json"
    summary.write_text(json.dumps({"reports": rows, "chromium": chromium}, indent=2) + "\n")
    print(f"wrote {summary}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
