"""``reprogram explain``: a self-contained HTML saliency report of a model and its trigger."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from reprogram.cli.app import app
from reprogram.cli.common import DEVICE_OPTION, SENSITIVE_OPTION, console
from reprogram.cli.fit import ALLOW_OUTSIDE, ALLOW_PICKLE, DATA, IMAGE, LABEL, MODEL, TEXT, TRIGGER_DIR, load_model, model_dataset
from reprogram.errors import InputError


@app.command("explain")
def explain_command(
    model_path: Path = MODEL, data: Path = DATA, label: str = LABEL, sensitive: list[str] = SENSITIVE_OPTION,
    out: Path = typer.Option(..., "--out", help="The HTML page to write (report.html): everything inlined, no scripts."),
    trigger_dir: Path = TRIGGER_DIR, text: str = TEXT, image: str = IMAGE,
    calibrator_dir: Path = typer.Option(None, "--calibrator", help="A calibrator folder (`reprogram calibrate`): "
                                                                   "adds its reliability diagram."),
    samples: int = typer.Option(4, "--samples", min=1, max=100, help="Inputs explained per group."),
    layer: str = typer.Option(None, "--layer", help="Grad-CAM layer (a module name; default the last convolution)."),
    smoothgrad: bool = typer.Option(False, "--smoothgrad", help="Add SmoothGrad maps (images)."),
    steps: int = typer.Option(None, "--steps", min=2, help="Integrated Gradients steps (default 32, 64 tabular)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample choice (and SmoothGrad noise)."),
    device: str = DEVICE_OPTION, allow_pickle: bool = ALLOW_PICKLE, allow_outside_paths: bool = ALLOW_OUTSIDE,
) -> None:
    """Explain a model, and what its trigger changes, group by group, in one HTML page."""
    from reprogram.data import read_table
    from reprogram.explain import saliency_report
    from reprogram.triggers import FingerprintWarning, load_trigger

    if out.suffix.lower() != ".html":
        raise InputError(f"--out must end in .html, got {out.name}")
    model, dev = load_model(model_path, allow_pickle, device)
    ds = model_dataset(data, model, label, sensitive, text, image, allow_outside_paths)
    frame = read_table(data) if model.input_kind == "tabular" or calibrator_dir is not None else None
    trig, meta = None, None
    if trigger_dir is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FingerprintWarning)
            trig, meta = load_trigger(trigger_dir, model)
        for w in caught:
            console.print(f"[yellow]warning:[/] {w.message}")
    cal = None
    if calibrator_dir is not None:
        from reprogram.calibrate import load_calibrator
        from reprogram.calibrate.artifacts import check_calibrator_groups

        cal = load_calibrator(calibrator_dir)
        check_calibrator_groups(cal, frame, calibrator_dir, source=str(data))
    console.print(f"explaining {len(ds)} rows of {data.name}: up to {samples} per group of "
                  f"{', '.join(ds.group_names)}" + (" (without and with the trigger)" if trig is not None else ""))
    report = saliency_report(model, ds, trig, calibrator=cal, out=out, samples=samples, seed=seed, layer=layer,
                             smoothgrad=smoothgrad, device=dev, trigger_meta=meta, progress=console.is_terminal,
                             table=frame, n_steps=steps)
    n = sum(len(r) for r in report.samples.values())
    console.print(f"wrote {out} ({n} samples, {len(report.figures)} figures, {len(report.html) / 1e6:.1f} MB)")
