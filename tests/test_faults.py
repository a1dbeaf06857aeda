"""Faults across the commands: a model and its sidecar written together, an interrupted demo,
an evaluation with nothing to score, unfinished videos, a full disk in the training log, files in
the way of outputs, bad annotation files and configs, and out-of-range options. Each is one line
naming the file or option, a non-zero exit, and nothing half-written or stale left behind."""

from __future__ import annotations

import errno
import json
import pickle
import shutil

import numpy as np
import pytest
import yaml
from dataset_files import write_dexycb, write_ho3d

from handssca.cli import main
from handssca.errors import InputError, OptionError, OutputError
from handssca.progress import without_progress
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.training.config import load_config
from handssca.training.datasets import HO3D, DexYCB, FreiHAND

from conftest import TINY as TINY_FIELDS
from conftest import TINY_CONFIG, TINY_OVERRIDES

TINY = TINY_OVERRIDES


@pytest.fixture(scope="module")
def freihand(small_synthetic_set):
    return small_synthetic_set


@pytest.fixture(scope="module")
def tiny_model(tiny_onnx):
    return tiny_onnx


def _full_disk_for(monkeypatch, name_part: str):
    """os.fdopen's files whose temporary name contains ``name_part`` fail to write: ENOSPC."""
    import os

    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        return Full(f) if name_part in os.readlink(f"/proc/self/fd/{fd}") else f

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_a_file_and_its_sidecar_are_written_together_or_not_at_all(tmp_path, monkeypatch):
    from handssca.runtime.files import write_together

    model, sidecar = tmp_path / "m.onnx", tmp_path / "m.json"
    write_together({model: b"old model", sidecar: b'{"old": 1}'})
    _full_disk_for(monkeypatch, "m.json")
    with pytest.raises(OutputError, match=r"m.json: cannot write it \(No space left on device\)"):
        write_together({model: b"new model", sidecar: b'{"new": 1}'})
    assert model.read_bytes() == b"old model" and sidecar.read_bytes() == b'{"old": 1}'  # the old pair, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]  # no temporary left


def test_an_export_whose_sidecar_cannot_be_written_leaves_the_old_pair(tiny_onnx, tmp_path, monkeypatch, capsys):
    config = TINY_CONFIG
    out = tmp_path / "a.onnx"
    shutil.copyfile(tiny_onnx, out)  # an earlier export's pair
    shutil.copyfile(tiny_onnx.with_suffix(".json"), out.with_suffix(".json"))
    before = out.read_bytes(), out.with_suffix(".json").read_bytes()
    _full_disk_for(monkeypatch, "a.json")
    assert main(["export", "--config", str(config), "-o", str(out), "--no-validate", "--seed", "2"]) == 1
    assert "a.json: cannot write it (No space left on device)" in capsys.readouterr().err
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before


def test_a_video_that_cannot_be_finished_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    import handssca.runtime.files as files
    from handssca.runtime.files import write_video

    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(4)]
    assert files.playable(write_video(tmp_path / "ok.mp4", frames, 10.0))
    monkeypatch.setattr(files, "playable", lambda path: False)  # what a full disk leaves: no index
    with pytest.raises(OutputError, match=r"bad.mp4: cannot write it \(the video could not be finished"):
        write_video(tmp_path / "bad.mp4", frames, 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp4"]


def test_the_webcam_removes_a_video_it_could_not_finish_even_without_another_error(
    tiny_model, tmp_path, monkeypatch, capsys
):
    import cv2

    import handssca.runtime.webcam as webcam

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((96, 128, 3), 60 * i, np.uint8))
    model = tiny_model
    monkeypatch.setattr(webcam, "playable", lambda path: False)
    out = tmp_path / "w"
    assert main(["webcam", "--source", str(folder), "--model", str(model), "--headless", "-o", str(out)]) == 1
    # what failed is said, not guessed: "full disk" only where the disk is full
    err = capsys.readouterr().err
    assert "annotated.mp4 could not be written (the encoder did not finish it) and was removed" in err
    assert not (out / "annotated.mp4").exists() and json.loads((out / "summary.json").read_text())["video"] is None
    assert not list(out.glob(".*partial*"))
    full = type("Usage", (), {"free": 4096})
    monkeypatch.setattr(webcam.shutil, "disk_usage", lambda path: full)
    assert main(["webcam", "--source", str(folder), "--model", str(model), "--headless", "-o", str(out)]) == 1
    assert "annotated.mp4 could not be written (the disk is full) and was removed" in capsys.readouterr().err


@pytest.mark.slow  # a whole command end to end (training, bench, int8, the demo)
def test_an_interrupted_demo_is_not_reported_as_finished(tmp_path, monkeypatch):
    import handssca.runtime.webcam as webcam
    from handssca.demo import run_demo

    def interrupted(*args, **kwargs):
        return webcam.WebcamReport(frames=3, interrupted=True)

    monkeypatch.setattr(webcam, "run_webcam", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "demo", quick=True)
    assert not (tmp_path / "demo" / "report.md").exists()


def test_eval_with_no_usable_sample_fails_in_one_line(freihand, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(freihand, root)
    first = sorted((root / "evaluation" / "rgb").glob("*.jpg"))[0]
    first.write_bytes(b"")
    args = ["eval", "--root", str(root), "--mean-hand", "--samples", "1", "-o", str(tmp_path / "e.json")]
    assert main([*args, "--submission", str(tmp_path / "p.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("handssca eval: ") and "no sample of the freihand evaluation split could be evaluated" in err
    assert f"{first}" in err and not (tmp_path / "e.json").exists() and not (tmp_path / "p.json").exists()


def test_unannotated_frames_are_counted_out_without_tripping_the_bad_image_limit():
    from handssca.errors import UnusableSample
    from handssca.training.evaluate import evaluate

    class Crops:
        def __len__(self):
            return 6

        def load(self, i):
            if i % 2:  # half the frames carry no hand annotation, as DexYCB marks them
                raise UnusableSample(f"frame {i}: no box or joints to crop the hand by", unannotated=True)
            return {"image": np.zeros((3, 8, 8), np.float32), "has_3d": np.float32(0), "has_vertices": np.float32(0)}

        __getitem__ = load

    def predict(images):
        return np.zeros((len(images), 21, 3)), np.zeros((len(images), 778, 3))

    results = evaluate({"m": predict}, Crops(), batch_size=2, progress=False)
    assert len(results["_skipped"]) == 3 and len(results["_predictions"]["m"][0]) == 3


def test_the_training_log_on_a_full_disk_is_one_line_naming_it(freihand, tmp_path, monkeypatch, capsys):
    import csv

    real_writer = csv.writer

    class FullLog:
        def __init__(self, f):
            self.inner = real_writer(f)

        def writerow(self, row):
            if str(row[3]).startswith("val/"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.inner.writerow(row)

    monkeypatch.setattr(csv, "writer", FullLog)
    out = tmp_path / "run"
    args = ["train", "--set", f"data.root={freihand}", "--set", f"train.out={out}", "--set", "train.max_steps=1"]
    args += ["--set", "train.batch_size=2", "--set", "train.epochs=1", "--set", "data.val_samples=1"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 1
    assert f"{out / 'log.csv'}: cannot write it (No space left on device)" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(args) == 1  # the folder holds the start of a run but no checkpoint: say so
    assert "stopped before its first checkpoint" in capsys.readouterr().err


def test_slimming_a_checkpoint_onto_itself_is_refused(tmp_path, capsys):
    import torch

    from handssca.models import HandSSCA, HandSSCAConfig
    from handssca.training.checkpoint import save_checkpoint

    net = HandSSCA(HandSSCAConfig(**TINY_FIELDS))
    path = tmp_path / "last.pt"
    optimizer = torch.optim.Adam(net.parameters())
    save_checkpoint(path, net, epoch=0, step=1, training={"optimizer": optimizer.state_dict()})
    before = path.read_bytes()
    assert main(["checkpoint", "slim", str(path), "-o", str(path)]) == 1
    assert "slimming it in place would drop the training state" in capsys.readouterr().err
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", ["webcam", "demo", "bench", "train"])
def test_a_file_in_the_way_of_an_output_folder_is_one_line(freihand, tiny_model, tmp_path, capsys, command):
    import cv2

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    target = blocker / "out"
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.zeros((96, 128, 3), np.uint8))
    tiny = [item for override in TINY for item in ("--set", override)]
    args = {
        "webcam": ["webcam", "--source", str(frames), "--model", str(tiny_model), "--headless", "-o", str(target)],
        "demo": ["demo", "--quick", "-o", str(target)],
        "bench": ["bench", "-o", str(target)],
        "train": [
            "train",
            "--set",
            f"train.out={target}",
            "--set",
            f"data.root={freihand}",
            "--set",
            "train.batch_size=2",
            *tiny,
        ],
    }[command]
    code = main(args)
    err = without_progress(capsys.readouterr().err)  # bench says what it loads first
    assert code == 1 and len(err) == 1 and err[0].startswith(f"handssca {command}: {target}"), err


def test_a_truncated_npz_is_one_line(tmp_path, capsys):
    good = tmp_path / "hand.npz"
    assert main(["mano", "builtin", "-o", str(good)]) == 0
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:2000])
    capsys.readouterr()
    assert main(["mano", "convert", str(cut), "-o", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert "cut.npz: truncated or not an .npz archive" in err and "pickle" not in err


def _edited(root, name, change):
    path = root / name
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("evaluation_xyz.json", lambda d: [x[:20] for x in d], r"evaluation_xyz.json: entries of shape \(4, 20, 3\)"),
        ("evaluation_K.json", lambda d: {"K": d}, "evaluation_K.json: unexpected contents"),
        ("evaluation_K.json", lambda d: [[[1, 2], [3, 4], [5, 6]]] * len(d), "evaluation_K.json: entries of shape"),
        ("evaluation_verts.json", lambda d: [v[:700] for v in d], r"evaluation_verts.json: entries of shape"),
        ("evaluation_xyz.json", lambda d: [[[float("nan")] * 3] * 21] * len(d), "xyz.json: holds NaN"),
        ("evaluation_xyz.json", lambda d: [d[0], d[1][:5], *d[2:]], "evaluation_xyz.json: unexpected contents"),
    ],
)
def test_freihand_annotations_of_the_wrong_shape_name_the_file(freihand, tmp_path, name, change, message):
    root = tmp_path / "fh"
    shutil.copytree(freihand, root)
    _edited(root, name, change)
    with pytest.raises(InputError, match=message):
        FreiHAND(root, "evaluation")
    (root / "evaluation_K.json").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(InputError, match="evaluation_K.json: not a text file"):
        FreiHAND(root, "evaluation")


def test_ho3d_and_dexycb_metadata_of_the_wrong_kind_name_the_file(tmp_path):
    mano, fingertip_ids = build_builtin_hand()
    rng = np.random.default_rng(0)
    ho3d = tmp_path / "ho3d"
    write_ho3d(ho3d, mano, fingertip_ids, rng)
    meta_path = ho3d / "train" / "ABF10" / "meta" / "0000.pkl"
    meta = pickle.loads(meta_path.read_bytes())
    del meta["handBeta"]
    meta_path.write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(InputError, match=r"0000.pkl: missing field 'handBeta'"):
        HO3D(ho3d, "train", mano=mano)
    (ho3d / "train.txt").write_text("nothing-here\n")
    with pytest.raises(InputError, match=r"train.txt: line 'nothing-here' is not SEQUENCE/FRAME"):
        HO3D(ho3d, "train", mano=mano)

    dex = tmp_path / "dex"
    write_dexycb(dex, mano, fingertip_ids, rng)
    sequence = next((dex / "20200709-subject-01").iterdir())
    meta = yaml.safe_load((sequence / "meta.yml").read_text())
    (sequence / "meta.yml").write_text(yaml.safe_dump({k: v for k, v in meta.items() if k != "mano_sides"}))
    with pytest.raises(InputError, match=r"meta.yml: missing field 'mano_sides'"):
        DexYCB(dex, "train", mano=mano)
    (sequence / "meta.yml").write_text(yaml.safe_dump(meta))
    labels = next((dex / "20200709-subject-01" / "20200709_141754").rglob("labels_000000.npz"))  # the right hand
    labels.write_bytes(labels.read_bytes()[:100])
    data = DexYCB(dex, "train", mano=mano)
    with pytest.raises(InputError, match="labels_000000.npz: truncated or not an .npz archive"):
        [data[i] for i in range(len(data))]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.log_every=0"], "train.log_every = 0: must be at least 1"),
        (["train.batch_size=0"], "train.batch_size = 0: must be at least 1"),
        (["train.epochs=0"], "train.epochs = 0: must be at least 1"),
        (["data.workers=-1"], "data.workers = -1: must be at least 0"),
        (["train.device=gpu"], "train.device = 'gpu': expected one of auto, cpu, cuda"),
        (["data.versions=[]"], r"data.versions = \[\]: expected FreiHAND background versions"),
        (["train.lr=["], r"--set train.lr=\[: the value is not valid YAML"),
    ],
)
def test_config_values_out_of_range_are_refused_by_name(overrides, message):
    with pytest.raises(OptionError, match=message):
        load_config(None, overrides)


def test_a_binary_config_file_and_a_bad_model_section_are_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(256)))
    assert main(["train", "--config", str(garbage)]) == 2  # config values are options: 2
    assert "garbage.yaml: not a text file" in capsys.readouterr().err
    bad = tmp_path / "model.yaml"
    bad.write_text("model: 3\n")
    assert main(["info", "--config", str(bad)]) == 2
    assert "model.yaml: 'model' must be a mapping" in capsys.readouterr().err


def test_bench_refuses_a_data_set_without_ground_truth_before_timing(freihand, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(freihand, root)
    for name in ("evaluation_xyz.json", "evaluation_verts.json", "evaluation_mano.json"):
        (root / name).unlink()
    assert main(["bench", "--data", str(root), "-o", str(tmp_path / "b")]) == 1
    assert "evaluation split has no ground truth" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "args, option",
    [
        (["eval", "--root", ".", "--mean-hand", "--batch", "0"], "--batch"),
        (["eval", "--root", ".", "--mean-hand", "--samples", "-2"], "--samples"),
        (["bench", "--batches", "1,x"], "--batches"),
        (["bench", "--batches", "0"], "--batches"),
        (["mano", "render", "--size", "0"], "--size"),
        (["info", "--batch", "0"], "--batch"),
    ],
)
def test_numbers_out_of_range_are_refused_by_the_parser(args, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and option in capsys.readouterr().err
