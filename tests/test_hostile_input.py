"""Hostile and broken input (issue 7): image paths out of the table's folder, image bombs,
damaged or mismatched artifacts. Each gives one clear line naming the file, never a
traceback; the CLI exits 2."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cli_helpers import invoke
from reprogram.calibrate import GroupCalibrator, save_calibrator
from reprogram.cli import main
from reprogram.data import load_dataset, load_dataset_like
from reprogram.data.datasets import max_image_pixels
from reprogram.errors import ArtifactError, CheckpointError, InputError
from reprogram.models import load_frozen
from reprogram.triggers import BorderTrigger, FeatureTrigger, load_trigger, save_trigger


def _one_line_error(code, text, *needles):
    assert code == 2, text
    assert "Traceback" not in text, text
    err = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, text
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def _train(args):
    with pytest.raises(SystemExit) as done:
        main(["train", *map(str, args)])
    assert done.value.code in (0, None)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder ``data/`` with 8x8 PNGs and a manifest, a PNG outside it, a CNN trained on it."""
    d = tmp_path_factory.mktemp("hostile_images")
    data = d / "data"
    (data / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 24
    y = np.arange(n) % 2
    for i in range(n):
        a = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        a[..., 0] = 255 * y[i]
        Image.fromarray(a).save(data / "imgs" / f"{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "outside.png")
    frame = pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(n)], "y": y, "g": np.where(np.arange(n) % 3, "a", "b")})
    frame.to_csv(data / "good.csv", index=False)
    ckpt = d / "cnn.pt"
    _train(["--data", data / "good.csv", "--label", "y", "--sensitive", "g", "--image", "path", "--arch", "cnn",
            "--image-size", 8, "--epochs", 1, "--out", ckpt])
    return d, data, frame, ckpt


def _hostile_tables(d, data, frame):
    """Tables whose first path leads out of ``data/``: ``..``, absolute, a symlink out."""
    out = {}
    for name, path in (("dotdot", "../outside.png"), ("absolute", str(d / "outside.png")), ("link", "imgs/link.png")):
        t = frame.copy()
        t.loc[0, "path"] = path
        t.to_csv(data / f"{name}.csv", index=False)
        out[name] = data / f"{name}.csv"
    link = data / "imgs" / "link.png"
    if not link.is_symlink():
        os.symlink(d / "outside.png", link)
    return out


def test_paths_out_of_the_table_folder_are_refused(images):
    d, data, frame, _ = images
    for name, table in _hostile_tables(d, data, frame).items():
        with pytest.raises(InputError, match=r"row 0 .*outside the table's folder.*allow-outside-paths"):
            load_dataset(table, label="y", sensitive="g", image="path")
        ds = load_dataset(table, label="y", sensitive="g", image="path", allow_outside_paths=True)
        assert ds[0][0].shape[0] == 3, name
        with pytest.raises(InputError, match="outside the table's folder"):
            load_dataset_like(table, {"input_kind": "image"}, label="y", sensitive="g", image="path")
        load_dataset_like(table, {"input_kind": "image"}, label="y", sensitive="g", image="path",
                          allow_outside_paths=True)


def test_paths_inside_the_folder_are_fine_however_written(images):
    d, data, frame, _ = images
    t = frame.copy()
    t.loc[0, "path"] = str(data / "imgs" / "0.png")  # absolute, but inside
    t.loc[1, "path"] = "imgs/../imgs/1.png"  # wanders, stays inside
    (data / "imgs" / "in.png").unlink(missing_ok=True)
    os.symlink(data / "imgs" / "2.png", data / "imgs" / "in.png")
    t.loc[2, "path"] = "imgs/in.png"  # a symlink that stays inside
    ds = load_dataset(t, label="y", sensitive="g", image="path", base_dir=data)
    assert len(ds) == len(t)
    # a DataFrame's paths are relative to base_dir (default: the working directory)
    with pytest.raises(InputError, match="outside"):
        load_dataset(t.assign(path=["/etc/passwd"] * len(t)), label="y", sensitive="g", image="path", base_dir=data)
    with pytest.raises(InputError, match="not a usable path"):
        load_dataset(t.assign(path=["a\x00b"] * len(t)), label="y", sensitive="g", image="path", base_dir=data)


@pytest.mark.slow
def test_every_image_command_refuses_outside_paths_unless_allowed(images, capsys, tmp_path):
    d, data, frame, ckpt = images
    tables = _hostile_tables(d, data, frame)
    common = ["--label", "y", "--sensitive", "g", "--image", "path"]
    for name, table in tables.items():
        runs = {
            "train": ["train", "--data", table, *common, "--arch", "cnn", "--image-size", 8, "--epochs", 1,
                      "--out", tmp_path / f"m_{name}.pt"],
            "fit": ["fit", "--model", ckpt, "--data", table, *common, "--epochs", 1, "--out", tmp_path / f"t_{name}"],
            "evaluate": ["evaluate", "--model", ckpt, "--data", table, *common],
            "apply": ["apply", "--model", ckpt, "--data", table, "--image", "path", "--out", tmp_path / f"p_{name}.csv"],
            "explain": ["explain", "--model", ckpt, "--data", table, *common, "--samples", 1, "--steps", 2,
                        "--out", tmp_path / f"r_{name}.html"],
            "export": ["export", "--model", ckpt, "--data", table, "--image", "path", "--rows", 4,
                       "--out", tmp_path / f"e_{name}.onnx"],
        }
        for cmd, args in runs.items():
            code, text = invoke(args, capsys)
            _one_line_error(code, text, "outside the table's folder", "--allow-outside-paths")
            assert not any(p.name.startswith((f"m_{name}", f"t_{name}", f"p_{name}", f"r_{name}", f"e_{name}"))
                           for p in tmp_path.iterdir()), (cmd, list(tmp_path.iterdir()))
    # the flag lets them through
    table = tables["dotdot"]
    code, text = invoke(["evaluate", "--model", ckpt, "--data", table, *common, "--allow-outside-paths"], capsys)
    assert code == 0, text
    out = tmp_path / "preds.csv"
    code, text = invoke(["apply", "--model", ckpt, "--data", table, "--image", "path", "--allow-outside-paths",
                         "--out", out], capsys)
    assert code == 0 and len(pd.read_csv(out)) == len(frame), text


def test_images_over_the_pixel_limit_are_refused(images, monkeypatch, capsys, tmp_path):
    d, data, frame, ckpt = images
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(data / "imgs" / "big.png")
    t = frame.copy()
    t.loc[3, "path"] = "imgs/big.png"
    t.to_csv(data / "big.csv", index=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    ds = load_dataset(data / "big.csv", label="y", sensitive="g", image="path")
    ds[0]  # 64 pixels: fine
    with pytest.raises(InputError, match=r"big\.png.*row 3 of .*big\.csv.*too large: .*4096 pixels"):
        ds[3]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # over the limit, under Pillow's own 2x error
    with pytest.raises(InputError, match=r"big\.png.*too large: .*4096 pixels.*4000"):
        ds[3]
    out = tmp_path / "p.csv"
    code, text = invoke(["apply", "--model", ckpt, "--data", data / "big.csv", "--image", "path", "--out", out], capsys)
    _one_line_error(code, text, "big.png", "too large")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # switching the limit off does not switch it off here
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert max_image_pixels() == 1024 * 1024 * 1024 // 4 // 3


def test_a_decompression_bomb_warning_is_an_error(images, monkeypatch):
    d, data, frame, _ = images
    ds = load_dataset(data / "good.csv", label="y", sensitive="g", image="path")

    def bomb(*a, **k):
        import warnings

        warnings.warn("Image size (999999999 pixels) exceeds limit", Image.DecompressionBombWarning)
        raise AssertionError("the warning must have been raised as an error")

    monkeypatch.setattr(Image, "open", bomb)
    with pytest.raises(InputError, match=r"0\.png.*row 0.*too large: Image size"):
        ds[0]


# ------------------------------------------------------------------ artifacts and checkpoints


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_tabular")
    rng = np.random.default_rng(0)
    n = 80
    df = pd.DataFrame({"x1": rng.normal(size=n), "c": rng.choice(["u", "v"], n), "g": rng.choice(["a", "b"], n),
                       "y": rng.integers(0, 2, n)})
    df.to_csv(d / "t.csv", index=False)
    ckpt = d / "m.pt"
    _train(["--data", d / "t.csv", "--label", "y", "--sensitive", "g", "--epochs", 1, "--hidden", 4, "--out", ckpt])
    model = load_frozen(ckpt)
    trig = d / "trigger"
    save_trigger(FeatureTrigger(3), trig, model=model)
    scores = rng.random(n)
    cal = GroupCalibrator(method="isotonic", min_group_size=5).fit(scores, df["y"].to_numpy(), df[["g"]])
    save_calibrator(cal, d / "calib")
    return d, ckpt, trig, d / "calib"


def _copy_model(ckpt, to):
    to.mkdir(exist_ok=True)
    (to / "m.pt").write_bytes(ckpt.read_bytes())
    (to / "m.json").write_text(ckpt.with_suffix(".json").read_text())
    return to / "m.pt"


def _copy_dir(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_sidecar_disagreeing_with_the_weights_is_refused(tabular, tmp_path, capsys):
    d, ckpt, _, _ = tabular
    m = _copy_model(ckpt, tmp_path / "classes")
    meta = json.loads(m.with_suffix(".json").read_text())
    m.with_suffix(".json").write_text(json.dumps({**meta, "classes": [0, 1, 2]}))
    with pytest.raises(CheckpointError, match=r"m\.pt does not match its sidecar .*m\.json.*3 classes.*outputs 2 logits"):
        load_frozen(m)
    code, text = invoke(["evaluate", "--model", m, "--data", d / "t.csv", "--label", "y", "--sensitive", "g"], capsys)
    _one_line_error(code, text, "m.json", "outputs 2 logits")

    m = _copy_model(ckpt, tmp_path / "features")
    meta["features"]["columns"].append({"name": "x9", "kind": "numeric", "mean": 0.0, "scale": 1.0})
    m.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"does not match its sidecar .*reads 4 features.*fails"):
        load_frozen(m)
    meta["features"]["columns"] = "garbage"
    m.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"m\.json"):
        load_frozen(m)


def test_truncated_checkpoint_and_sidecar(tabular, tmp_path):
    d, ckpt, _, _ = tabular
    m = _copy_model(ckpt, tmp_path / "trunc")
    m.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match=r"m\.pt"):
        load_frozen(m)
    m = _copy_model(ckpt, tmp_path / "trunc_json")
    m.with_suffix(".json").write_text(ckpt.with_suffix(".json").read_text()[:50])
    with pytest.raises(CheckpointError, match=r"m\.json is not valid JSON"):
        load_frozen(m)


@pytest.mark.parametrize("damage", ["truncate_weights", "no_weights", "bad_json", "json_list", "version", "bool_version",
                                    "unknown_trigger", "config_list", "config_bad_value", "wrong_tensor"])
def test_damaged_trigger_folders(tabular, tmp_path, capsys, damage):
    d, ckpt, trig, _ = tabular
    t = _copy_dir(trig, tmp_path / "t")
    meta = json.loads((t / "meta.json").read_text())
    w = t / "weights.safetensors"
    if damage == "truncate_weights":
        w.write_bytes(w.read_bytes()[:-7])
    elif damage == "no_weights":
        w.unlink()
    elif damage == "bad_json":
        (t / "meta.json").write_text('{"format": "reprogram.trigger", ')
    elif damage == "json_list":
        (t / "meta.json").write_text("[1, 2]")
    elif damage in ("version", "bool_version"):
        (t / "meta.json").write_text(json.dumps({**meta, "version": "1" if damage == "version" else True}))
    elif damage == "unknown_trigger":
        (t / "meta.json").write_text(json.dumps({**meta, "trigger": ["os.system"]}))
    elif damage == "config_list":
        (t / "meta.json").write_text(json.dumps({**meta, "config": [1, 2]}))
    elif damage == "config_bad_value":
        (t / "meta.json").write_text(json.dumps({**meta, "config": {**meta["config"], "n_features": -3}}))
    elif damage == "wrong_tensor":
        from safetensors.torch import save_file

        save_file({"theta": torch.zeros(7)}, str(w))
    with pytest.raises(ArtifactError, match=str(t)):
        load_trigger(t)
    code, text = invoke(["evaluate", "--model", ckpt, "--trigger", t, "--data", d / "t.csv", "--label", "y",
                         "--sensitive", "g"], capsys)
    _one_line_error(code, text, str(t))


def test_trigger_for_another_input_kind_or_shape(tabular, images, tmp_path):
    d, ckpt, _, _ = tabular
    model = load_frozen(ckpt)
    save_trigger(FeatureTrigger(5), tmp_path / "five")
    with pytest.raises(ArtifactError, match=r"five is a trigger for 5 features; the model reads 3"):
        load_trigger(tmp_path / "five", model)
    save_trigger(BorderTrigger(8, 1), tmp_path / "border")
    with pytest.raises(ArtifactError, match=r"border is a image trigger; the model reads tabular"):
        load_trigger(tmp_path / "border", model)
    _, _, _, cnn = images
    image_model = load_frozen(cnn)
    save_trigger(BorderTrigger(16, 1), tmp_path / "border16")
    with pytest.raises(ArtifactError, match=r"border16 is a trigger for 3 x 16 x 16 images; the model reads 3 x 8 x 8"):
        load_trigger(tmp_path / "border16", image_model)
    save_trigger(BorderTrigger(8, 1), tmp_path / "border8")
    load_trigger(tmp_path / "border8", image_model)


@pytest.mark.parametrize("damage", ["truncate_weights", "bad_json", "unknown_calibrator", "drop_tensor", "bad_groups"])
def test_damaged_calibrator_folders(tabular, tmp_path, capsys, damage):
    from reprogram.calibrate import load_calibrator

    d, ckpt, _, calib = tabular
    c = _copy_dir(calib, tmp_path / "c")
    meta = json.loads((c / "meta.json").read_text())
    w = c / "weights.safetensors"
    if damage == "truncate_weights":
        w.write_bytes(w.read_bytes()[:20])
    elif damage == "bad_json":
        (c / "meta.json").write_text("{")
    elif damage == "unknown_calibrator":
        (c / "meta.json").write_text(json.dumps({**meta, "calibrator": "Evil"}))
    elif damage == "drop_tensor":
        from safetensors.torch import load_file, save_file

        t = load_file(str(w))
        t.pop(sorted(t)[0])
        save_file(t, str(w))
    elif damage == "bad_groups":
        (c / "meta.json").write_text(json.dumps({**meta, "groups": 7, "encoder": {"x": 1}}))
    with pytest.raises(ArtifactError, match=str(c)):
        load_calibrator(c)
    out = tmp_path / "p.csv"
    code, text = invoke(["apply", "--model", ckpt, "--calibrator", c, "--data", d / "t.csv", "--out", out], capsys)
    _one_line_error(code, text, str(c))
    assert not out.exists()


def test_calibrator_whose_groups_are_not_in_the_data(tabular, tmp_path, capsys):
    d, ckpt, _, calib = tabular
    frame = pd.read_csv(d / "t.csv")
    frame.assign(g=frame["g"].map({"a": "A", "b": "B"})).to_csv(tmp_path / "other.csv", index=False)
    out = tmp_path / "p.csv"
    code, text = invoke(["apply", "--model", ckpt, "--calibrator", calib, "--data", tmp_path / "other.csv",
                         "--out", out], capsys)
    _one_line_error(code, text, str(calib), "fitted on groups a, b", "found: A, B")
    assert not out.exists()
    frame.drop(columns="g").to_csv(tmp_path / "nog.csv", index=False)
    code, text = invoke(["apply", "--model", ckpt, "--calibrator", calib, "--data", tmp_path / "nog.csv",
                         "--out", out], capsys)
    _one_line_error(code, text, "'g' not found")
    # some rows of an unseen group are allowed (they get the global map)
    frame.assign(g=np.where(np.arange(len(frame)) == 0, "new", frame["g"])).to_csv(tmp_path / "some.csv", index=False)
    code, text = invoke(["apply", "--model", ckpt, "--calibrator", calib, "--data", tmp_path / "some.csv",
                         "--out", out], capsys)
    assert code == 0, text
    assert "calibrated_score" in pd.read_csv(out).columns


# ------------------------------------------------------------------ found by tests/cli/test_cli_fuzz.py


def test_infinite_label_is_refused_before_anything_is_written(tmp_path, capsys):
    df = pd.DataFrame({"x": np.arange(40.0), "g": ["a", "b"] * 20, "y": [0.0, 1.0] * 19 + [np.inf, 1.0]})
    df.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "m.pt"
    code, text = invoke(["train", "--data", tmp_path / "t.csv", "--label", "y", "--sensitive", "g", "--epochs", 1,
                         "--out", out], capsys)
    _one_line_error(code, text, "label column 'y'", "infinite")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_missing_group_values_in_a_split_table(tmp_path, capsys):
    df = pd.DataFrame({"x": np.arange(40.0), "g": ["a", "b"] * 20, "y": [0, 1] * 20})
    df.loc[3, "g"] = None
    df.to_csv(tmp_path / "t.csv", index=False)
    code, text = invoke(["train", "--data", tmp_path / "t.csv", "--label", "y", "--sensitive", "g", "--epochs", 1,
                         "--out", tmp_path / "m.pt"], capsys)
    _one_line_error(code, text, "'g'", "missing")


def test_empty_parquet_predictions(tmp_path, capsys):
    pd.DataFrame({"y": pd.Series([], dtype=int), "g": pd.Series([], dtype=str),
                  "score": pd.Series([], dtype=float)}).to_parquet(tmp_path / "p.parquet")
    code, text = invoke(["calibrate", "--predictions", tmp_path / "p.parquet", "--score", "score", "--label", "y",
                         "--sensitive", "g", "--out", tmp_path / "c"], capsys)
    _one_line_error(code, text, "no rows")
    assert not (tmp_path / "c").exists()


def test_parquet_list_and_binary_columns_read_as_text(tmp_path):
    from reprogram.data import read_table

    pd.DataFrame({"l": [[1, 2], [3]], "d": [{"k": 1}, {"k": 2}], "b": [b"\x00\xff", b"ok"], "s": ["x", "y"]}) \
        .to_parquet(tmp_path / "t.parquet")
    t = read_table(tmp_path / "t.parquet")
    assert t["l"].tolist() == ["[1, 2]", "[3]"] and t["b"].tolist() == ["\x00\\xff", "ok"]
    assert all(isinstance(v, str) for v in t["d"]) and t["s"].tolist() == ["x", "y"]
    ds = load_dataset(t.assign(y=[0, 1], g=["a", "b"]), label="y", sensitive="l")  # lists as groups: fine as text
    assert ds.group_names == ["[1, 2]", "[3]"]
