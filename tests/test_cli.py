"""The handssca command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from handssca.cli import main
from handssca.training.config import load_model_config


def test_info_json_reports_counts_backend_and_outputs(capsys):
    assert main(["info", "--json", "--attention", "ssa", "--input-size", "128"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["attention"] == "ssa"
    assert report["parameters"]["attention (ssa)"] == 567_808
    assert report["selective_scan"].startswith("cpu-kernel")
    assert report["outputs"]["heatmaps"] == [1, 21, 16, 16]


def test_info_table(capsys):
    assert main(["info", "--input-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "attention (ssca)" in out and "total" in out and "selective scan (cpu): cpu-kernel" in out


def test_info_reads_a_yaml_config(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  attention: none\n  input_size: 128\n  resnet_width: 8\n  fpn_channels: 32\n")
    assert main(["info", "--json", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["resnet_width"] == 8 and report["parameters"]["attention (none)"] == 0


def test_info_config_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  attention: transformer\n")
    assert main(["info", "--config", str(bad)]) == 2  # an option (a config value): 2
    err = capsys.readouterr().err.strip()
    assert "bad.yaml" in err and "transformer" in err and "\n" not in err
    assert main(["info", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and "info" in err


def test_console_script_and_module_entry_points():
    result = subprocess.run([sys.executable, "-m", "handssca", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("handssca ")


MODEL_CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_model_config_is_valid(path):
    config = load_model_config(str(path), {})
    assert config.attention in ("none", "self_attention", "ssa", "ssca")


def test_tiny_config_runs(capsys):
    assert main(["info", "--json", "--config", str(Path(__file__).parent.parent / "configs/model/tiny.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["input_size"] == 128


def test_info_bad_imagenet_weights_is_one_line(tmp_path, capsys):
    junk = tmp_path / "resnet50-junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert main(["info", "--input-size", "128", "--imagenet-weights", str(junk)]) == 1
    err = capsys.readouterr().err.strip()
    assert "resnet50-junk.pth: cannot read" in err and "\n" not in err


def test_export_command(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    config = str(Path(__file__).parent.parent / "configs/model/tiny.yaml")
    assert main(["export", "--config", config, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "2 selective-scan nodes" in printed and "ONNX Runtime vs PyTorch" in printed
    # Each step that takes seconds says so first, the first before PyTorch is even imported.
    steps = captured.err.splitlines()
    assert steps[0] == "export: loading PyTorch and the network ..." and any("tracing" in s for s in steps)
    assert any("ONNX Runtime against PyTorch" in s for s in steps)
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert main(["export", "--config", config, "-o", str(tmp_path / "x.txt")]) == 1
    assert "must end in .onnx" in capsys.readouterr().err
