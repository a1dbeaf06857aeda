"""Checkpoints: the file training writes and export reads; bad files get one-line errors."""

from __future__ import annotations

import json
import pickle

import onnx
import pytest
import torch

from handssca.cli import main
from handssca.errors import ModelFileError
from handssca.models import HandSSCA, HandSSCAConfig
from handssca.progress import without_progress
from handssca.training.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint, save_checkpoint

from conftest import TINY


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = HandSSCA(HandSSCAConfig(attention="ssa", **TINY))
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, epoch=4, step=120, metrics={"pa_mpjpe_mm": 9.5})
    return model, path


def test_round_trip(checkpoint):
    model, path = checkpoint
    state = load_checkpoint(path)
    assert state["format"] == FORMAT and state["epoch"] == 4 and state["metrics"] == {"pa_mpjpe_mm": 9.5}
    loaded = model_from_checkpoint(path)
    assert loaded.config == model.config and not loaded.training
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bad_checkpoints_get_one_line_errors(checkpoint, tmp_path):
    model, path = checkpoint
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.pt: truncated or not a PyTorch checkpoint"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)
    with pytest.raises(ModelFileError, match="notes.pt: truncated or not a PyTorch checkpoint"):
        load_checkpoint(text)
    with pytest.raises(ModelFileError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(ModelFileError, match="not a HandSSCA checkpoint"):
        load_checkpoint(foreign)
    state = load_checkpoint(path)
    state["model_config"] = {**state["model_config"], "attention": "ssca"}
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ModelFileError, match="weights do not fit the model: .*missing"):
        model_from_checkpoint(other)


def test_slim_keeps_weights_and_drops_training_state(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    state = load_checkpoint(path)
    state["training"] = {"optimizer": {"exp_avg": torch.zeros(1_000_000)}, "rng": torch.get_rng_state()}
    full = tmp_path / "full.pt"
    torch.save(state, full)
    slim = tmp_path / "slim.pt"
    assert main(["checkpoint", "slim", str(full), "-o", str(slim)]) == 0
    assert "epoch 4" in capsys.readouterr().out
    slimmed = load_checkpoint(slim)
    assert "training" not in slimmed and slimmed["metrics"] == {"pa_mpjpe_mm": 9.5}
    assert slim.stat().st_size < full.stat().st_size
    for (name, a), b in zip(model.state_dict().items(), model_from_checkpoint(slim).state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    assert main(["checkpoint", "slim", str(bad), "-o", str(tmp_path / "out.pt")]) == 1
    assert "bad.pt: truncated or not a PyTorch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


class Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_with_code_is_refused_not_run(tmp_path, capfd):
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": {}, "model_config": {}, "payload": Boom()}, evil, pickle_module=pickle)
    with pytest.raises(ModelFileError, match="evil.pt: refused to load") as refused:
        load_checkpoint(evil)
    assert "this must never run" not in capfd.readouterr().out
    message = str(refused.value)
    # One line that names what was found, and never invites turning the safety off.
    assert (
        "\n" not in message
        and len(message) < 300
        and "weights_only" not in message
        and "a reference to print" in message
    )


def test_export_from_a_checkpoint(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(path), "-o", str(out), "--batch", "1"]) == 0
    assert "polygraphy" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["weights"] == "checkpoint model.pt" and meta["model_config"]["attention"] == "ssa"
    assert sum(n.op_type == "HandSSCASelectiveScan" for n in onnx.load(out).graph.node) == 1
    truncated = tmp_path / "bad.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    assert main(["export", "--checkpoint", str(truncated), "-o", str(tmp_path / "x.onnx")]) == 1
    err = "\n".join(without_progress(capsys.readouterr().err))  # the error alone, after what it loads
    assert err.startswith("handssca export: ") and "bad.pt" in err and len(err.splitlines()) == 1
    assert main(["export", "--checkpoint", str(path), "--attention", "ssca"]) == 1
    assert "--checkpoint fixes the model" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_export_portable_fp16_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "p.onnx"
    args = ["export", "-o", str(out), "--input-size", "128", "--attention", "ssa"]
    assert main([*args, "--scan", "portable", "--precision", "fp16"]) == 0
    printed = capsys.readouterr().out
    assert "fp16, scans in standard ONNX ops" in printed and "untrained" in printed
    assert not any(n.domain for n in onnx.load(out).graph.node)
