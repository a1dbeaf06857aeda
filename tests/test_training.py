"""Training on a generated synthetic set: the loss falls, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from handssca.cli import main
from handssca.errors import OptionError, RunError
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.training.checkpoint import load_checkpoint
from handssca.training.config import load_config
from handssca.training.synthetic import SynthOptions, make_synthetic_dataset
from handssca.training.trainer import Trainer

from conftest import TINY_OVERRIDES

TINY_MODEL = TINY_OVERRIDES


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    mano, fingertip_ids = build_builtin_hand()
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, mano, fingertip_ids, SynthOptions(train=8, evaluation=4, seed=1), show_progress=False)
    return root


def config_for(root, out, *extra):
    overrides = [
        f"data.root={root}",
        "mano.model=builtin",
        "train.batch_size=4",
        "train.lr=0.001",
        "train.log_every=1",
        "train.checkpoint_every=0",
        f"train.out={out}",
        "data.occluders=0.0",
        *TINY_MODEL,
        *extra,
    ]
    return load_config(None, overrides)


def test_the_loss_falls_on_synthetic_data(synthetic_root, tmp_path):
    torch.set_num_threads(2)
    trainer = Trainer(config_for(synthetic_root, tmp_path, "train.epochs=4", "train.max_steps=30"), show_progress=False)
    trainer.fit()
    losses = [row["loss"] for row in trainer.history]
    assert len(losses) == 30
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"loss: first 5 steps {first:.4g}, last 5 steps {last:.4g}")
    assert last < 0.7 * first
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "log.csv").is_file()
    assert (tmp_path / "best.pt").is_file()  # validation ran at the epoch ends
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["metrics"]["pa_mpjpe_mm"] > 0 and best["training"]["config"]["train"]["lr"] == 0.001


def test_resume_continues_exactly(synthetic_root, tmp_path):
    torch.set_num_threads(1)
    straight = Trainer(
        config_for(synthetic_root, tmp_path / "a", "train.epochs=2", "train.max_steps=12"), show_progress=False
    )
    straight.fit()
    first = Trainer(
        config_for(synthetic_root, tmp_path / "b", "train.epochs=2", "train.max_steps=5"), show_progress=False
    )
    first.fit()
    state = load_checkpoint(tmp_path / "b" / "last.pt")
    assert state["step"] == 5 and state["epoch"] == 0 and state["training"]["epoch_step"] == 5
    # As after a kill: the log ran on past the checkpoint (steps 6 and 7); resuming must not log them twice.
    with open(tmp_path / "b" / "log.csv", "a") as log:
        log.write("6,0,0.0001,train/loss,1.0\n7,0,0.0001,train/loss,1.0\n")
    resumed = Trainer(
        config_for(synthetic_root, tmp_path / "b", "train.epochs=2", "train.max_steps=12"),
        resume=tmp_path / "b" / "last.pt",
        show_progress=False,
    )
    resumed.fit()
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]
    keys = [tuple(r.split(",")[0:4:3]) for r in rows]  # (step, name)
    assert len(keys) == len(set(keys)), "a step was logged twice"
    assert {k[0] for k in keys} >= {str(s) for s in range(1, 13)}
    assert resumed.global_step == straight.global_step == 12
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    torch.set_num_threads(2)


@pytest.mark.slow  # a whole command end to end (training, bench, int8, the demo)
def test_train_and_eval_commands(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--set", f"data.root={synthetic_root}", "--set", "mano.model=builtin", "--set", f"train.out={out}"]
    args += ["--set", "train.batch_size=4", "--set", "train.epochs=1", "--set", "train.max_steps=2"]
    for item in TINY_MODEL:
        args += ["--set", item]
    assert main(args) == 0
    assert "checkpoints in" in capsys.readouterr().out
    assert main([*args, "--auto-resume"]) == 0  # continues from last.pt (already done: no more steps)
    result = tmp_path / "eval.json"
    export = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(out / "last.pt"), "-o", str(export)]) == 0
    log = (out / "log.csv").read_text()
    assert "\n0,0,,val/pa_mpjpe_mm," in log  # the untrained score comes first
    args = ["eval", "--root", str(synthetic_root), "--checkpoint", str(out / "last.pt"), "--onnx", str(export)]
    args.append("--mean-hand")
    assert main([*args, "-o", str(result), "--submission", str(tmp_path / "pred.json")]) == 0
    printed = capsys.readouterr().out
    assert "pytorch" in printed and "onnxruntime" in printed
    results = json.loads(result.read_text())["results"]
    torch_row, onnx_row = results["pytorch"], results["onnxruntime:m.onnx"]
    assert torch_row["count"] == 4 and abs(torch_row["pa_mpjpe_mm"] - onnx_row["pa_mpjpe_mm"]) < 1e-3
    baseline = results["mean hand (baseline)"]
    assert baseline["count"] == 4 and 0 < baseline["pa_mpjpe_mm"] < 100
    assert (tmp_path / "pred.json").is_file()


def test_training_errors_are_clear(synthetic_root, tmp_path, capsys):
    with pytest.raises(OptionError, match="data.root is not set"):
        Trainer(load_config(None, ["mano.model=builtin", *TINY_MODEL]), show_progress=False)
    with pytest.raises(OptionError, match="mano.model is not set"):
        Trainer(load_config(None, [f"data.root={synthetic_root}", "mano.model=null"]), show_progress=False)
    assert main(["train", "--set", "train.epoch=3"]) == 2  # a config value: 2
    assert "unknown key 'epoch'" in capsys.readouterr().err
    assert main(["train", "--set", f"data.root={tmp_path / 'nothing'}", "--set", "mano.model=builtin"]) == 1
    assert "nothing" in capsys.readouterr().err


def test_training_into_a_folder_that_holds_a_run_is_refused(synthetic_root, tmp_path):
    out = tmp_path / "run"
    Trainer(config_for(synthetic_root, out, "train.epochs=1", "train.max_steps=2"), show_progress=False).fit()
    before = {name: (out / name).read_bytes() for name in ("last.pt", "log.csv", "config.json")}
    with pytest.raises(RunError, match=r"holds a run already \(last.pt.*--resume .*last.pt"):
        Trainer(config_for(synthetic_root, out, "train.epochs=1", "train.max_steps=2"), show_progress=False)
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing touched


def test_eval_counts_a_bad_image_out_and_names_it(synthetic_root, tmp_path, capsys):
    """A truncated evaluation image (which OpenCV would decode as half grey) is counted out and
    named, never replaced by its neighbour; too many bad images stop the run in one line."""
    import json
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    images = sorted((root / "evaluation" / "rgb").glob("*.jpg"))
    data = images[1].read_bytes()
    images[1].write_bytes(data[: len(data) // 2])
    args = ["eval", "--root", str(root), "--mean-hand", "-o", str(tmp_path / "e.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    n = len(images)
    assert f"{n - 1} of {n} samples" in out and f"counted out: {images[1]}: truncated JPEG" in out
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["samples"] == n - 1 and report["skipped"][0].startswith(str(images[1]))
    assert report["results"]["mean hand (baseline)"]["count"] == n - 1
    images[2].write_bytes(b"")
    assert main(args) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert line.startswith("handssca eval: 2 of the first 3 samples are unusable, more than 1%: ")
    assert "00000001.jpg: truncated JPEG" in line and "(and 1 more)" in line


def test_eval_of_a_split_without_ground_truth_still_writes_the_submission(synthetic_root, tmp_path, capsys):
    import json
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    for name in ("evaluation_xyz.json", "evaluation_verts.json", "evaluation_mano.json"):
        (root / name).unlink(missing_ok=True)
    submission = tmp_path / "pred.json"
    args = ["eval", "--root", str(root), "--mean-hand", "-o", str(tmp_path / "e.json"), "--submission", str(submission)]
    assert main(args) == 0
    assert "no ground truth in this split: metrics unavailable" in capsys.readouterr().out
    joints, vertices = json.loads(submission.read_text())
    assert len(joints) == len(vertices) == len(list((root / "evaluation" / "rgb").glob("*.jpg")))
    assert json.loads((tmp_path / "e.json").read_text())["scored"] == 0


def test_a_truncated_png_or_jpeg_is_detected(tmp_path):
    import cv2

    from handssca.errors import UnreadableImage
    from handssca.runtime.files import read_image

    image = np.full((32, 32, 3), 120, np.uint8)
    for suffix in (".jpg", ".png"):
        whole = tmp_path / f"whole{suffix}"
        cv2.imwrite(str(whole), image)
        assert read_image(whole).shape == (32, 32, 3)
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole.read_bytes()[:-40])
        with pytest.raises(UnreadableImage, match=f"cut{suffix}: truncated"):
            read_image(cut)
    with pytest.raises(UnreadableImage, match="missing.jpg: cannot be read"):
        read_image(tmp_path / "missing.jpg")


def test_eval_finds_an_unwritable_output_before_evaluating(synthetic_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = ["eval", "--root", str(synthetic_root), "--mean-hand", "-o", str(blocker / "e.json")]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "file/e.json: cannot write it" in captured.err and "evaluating" not in captured.err


def test_the_ranks_batches_together_are_the_single_process_batches():
    """With W processes of batch B, step k sees exactly the samples one process of batch W*B sees
    at step k (the condition for DDP to train like one process), resumed mid-epoch included."""
    from handssca.training.trainer import EpochSampler

    size, batch, world = 37, 3, 2
    single = EpochSampler(size, batch * world, seed=5)
    ranks = [EpochSampler(size, batch, seed=5, rank=r, world=world) for r in range(world)]
    for epoch, skip in ((0, 0), (3, 2)):
        single.set_epoch(epoch, skip)
        for sampler in ranks:
            sampler.set_epoch(epoch, skip)
        whole = list(single)
        shares = [list(sampler) for sampler in ranks]
        assert len({len(share) for share in shares}) == 1  # ranks stay in step
        for k in range(len(shares[0]) // batch):
            together = sorted(i for share in shares for i in share[k * batch : (k + 1) * batch])
            assert together == sorted(whole[k * batch * world : (k + 1) * batch * world])
