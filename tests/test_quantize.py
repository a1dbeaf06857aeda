"""int8 export: calibrated stage by stage around the scan nodes, put back into one file, run
unchanged by OnnxRunner; its cost measured by eval against the fp32 file."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest

from handssca.cli import main
from handssca.errors import InputError, RunError
from handssca.export import export_onnx
from handssca.export.quantize import int8_format, quantize_int8
from handssca.runtime.backends.onnx_runner import OnnxRunner
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.scan.node import OP_TYPE
from handssca.training.datasets import detect_layout
from handssca.training.samples import calibration_crops

from conftest import TINY_CONFIG


@pytest.fixture(scope="module")
def fp32(tiny_network, tiny_onnx):
    return tiny_network, tiny_onnx


@pytest.fixture(scope="module")
def synthetic_root(small_synthetic_set):
    return small_synthetic_set


@pytest.mark.parametrize("fmt, scope", [("u8s8", "backbone"), ("s8s8", "backbone"), ("u8s8", "all")])
def test_int8_file_quantizes_the_convolutions_and_keeps_the_scan_nodes(fp32, tmp_path, fmt, scope):
    _, source = fp32
    rng = np.random.default_rng(7)  # fresh calibration and test inputs
    calibration = rng.standard_normal((5, 3, 128, 128)).astype(np.float32)
    info = quantize_int8(
        source, tmp_path / "int8.onnx", calibration, fmt, show_progress=False, calibration="random", scope=scope
    )
    proto = onnx.load(tmp_path / "int8.onnx")
    ops = Counter(n.op_type for n in proto.graph.node)
    plain = Counter(n.op_type for n in onnx.load(source).graph.node)
    assert ops[OP_TYPE] == plain[OP_TYPE] == 2  # the scans as they were, one node each
    assert ops["QuantizeLinear"] > 0 and ops["Conv"] == plain["Conv"]
    # Which convolutions read int8 weights: those before the scans, or (scope "all") every one.
    made_by = {out: n for n in proto.graph.node for out in n.output}
    before_scans, seen_scan = [], False
    for node in proto.graph.node:
        seen_scan = seen_scan or node.op_type == OP_TYPE
        if node.op_type == "Conv":
            weight = made_by.get(node.input[1])
            before_scans.append((not seen_scan, weight is not None and weight.op_type == "DequantizeLinear"))
    assert all(quantized for early, quantized in before_scans if early)
    heads = [quantized for early, quantized in before_scans if not early]
    assert heads and (all(heads) if scope == "all" else not any(heads))
    assert info["scope"] == scope
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}["handssca"])
    assert metadata["precision"] == "int8" and metadata["int8"]["format"] == fmt == info["format"]
    assert json.loads((tmp_path / "int8.json").read_text()) == metadata
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    zero_points = [constants[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    if fmt == "s8s8":  # TensorRT's explicit int8: signed, zero points 0
        assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    else:
        assert all(z.dtype == np.uint8 for z in zero_points)

    image = rng.standard_normal((2, 3, 128, 128)).astype(np.float32)
    expected, got = OnnxRunner(source).run(image), OnnxRunner(tmp_path / "int8.onnx").run(image)
    assert set(got) == set(expected)
    moved = np.abs(got["joints_2d"] - expected["joints_2d"]).max()
    assert 0 < moved < 0.05  # quantized (not the fp32 graph), and close to it (crop fractions)


def test_int8_refuses_what_it_cannot_quantize(fp32, tmp_path):
    net, source = fp32
    images = np.zeros((2, 3, 128, 128), np.float32)
    with pytest.raises(RunError, match="int8 format 'u4': expected one of auto, u8s8, s8s8"):
        int8_format("u4")
    with pytest.raises(RunError, match="int8 scope 'heads': expected backbone or all"):
        quantize_int8(source, tmp_path / "x.onnx", images, scope="heads")
    with pytest.raises(RunError, match="must end in .onnx"):
        quantize_int8(source, tmp_path / "x.bin", images)
    with pytest.raises(RunError, match=r"non-empty \(N, 3, S, S\)"):
        quantize_int8(source, tmp_path / "x.onnx", images[:0], show_progress=False)
    fp16 = export_onnx(net, tmp_path / "fp16.onnx", precision="fp16", validate=False).path
    with pytest.raises(RunError, match="fp16.onnx: int8 starts from an fp32 export, this one is fp16"):
        quantize_int8(fp16, tmp_path / "x.onnx", images, show_progress=False)
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_crops_from_any_layout_count_bad_images_out(synthetic_root, tmp_path):
    crops, skipped = calibration_crops(str(synthetic_root), 4, 128)
    assert crops.shape == (4, 3, 128, 128) and crops.dtype == np.float32 and skipped == []
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    first = sorted((root / "training" / "rgb").glob("*.jpg"))[0]
    first.write_bytes(first.read_bytes()[:300])
    crops, skipped = calibration_crops(str(root), 4, 128)
    assert len(crops) == 3 and len(skipped) == 1 and skipped[0].startswith(f"{first}: truncated JPEG")
    synth, _ = calibration_crops("synth", 3, 96)
    assert synth.shape == (3, 3, 96, 96) and 0.3 < synth.std() < 3  # normalised like inference input
    with pytest.raises(InputError, match="not a FreiHAND"):
        calibration_crops(str(tmp_path), 2, 128)


def test_layouts_are_recognised_by_their_files(synthetic_root, tmp_path):
    from dataset_files import write_dexycb, write_ho3d

    mano, fingertip_ids = build_builtin_hand()
    rng = np.random.default_rng(0)
    write_ho3d(tmp_path / "ho3d", mano, fingertip_ids, rng)
    write_dexycb(tmp_path / "dexycb", mano, fingertip_ids, rng)
    assert detect_layout(synthetic_root) == "freihand"
    assert detect_layout(tmp_path / "ho3d") == "ho3d"
    assert detect_layout(tmp_path / "dexycb") == "dexycb"
    with pytest.raises(InputError, match="missing: data set folder not found"):
        detect_layout(tmp_path / "missing")


@pytest.mark.slow  # a whole command end to end (training, bench, int8, the demo)
def test_export_int8_command_and_eval_reports_its_cost(synthetic_root, tmp_path, capsys):
    config = TINY_CONFIG
    fp32 = tmp_path / "m.onnx"
    int8 = tmp_path / "m_int8.onnx"
    assert main(["export", "--config", str(config), "-o", str(int8), "--precision", "int8"]) == 1
    assert "--precision int8 needs --calibration DATA" in capsys.readouterr().err
    assert not int8.exists()
    assert main(["export", "--config", str(config), "-o", str(fp32), "--no-validate"]) == 0
    args = ["export", "--config", str(config), "-o", str(int8), "--precision", "int8", "--calibration"]
    assert main([*args, str(synthetic_root), "--calibration-images", "3"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {int8}: u8s8" in out and "calibrated on" in out
    assert f"handssca eval --root {synthetic_root} --onnx FP32.onnx --onnx {int8}" in out  # a hint that runs
    assert "int8 against PyTorch on the 3 calibration crops: joints move" in out  # checked like fp32 and fp16
    shift = json.loads(int8.with_suffix(".json").read_text())["int8"]["shift_vs_pytorch"]
    assert shift["samples"] == 3 and shift["joints_mm"]["max"] >= shift["joints_mm"]["median"] >= 0
    report = tmp_path / "e.json"
    assert (
        main(["eval", "--root", str(synthetic_root), "--onnx", str(fp32), "--onnx", str(int8), "-o", str(report)]) == 0
    )
    out = capsys.readouterr().out
    assert "onnxruntime:m_int8.onnx vs onnxruntime:m.onnx: PA-MPJPE" in out and "joints move" in out
    assert "ms/image (" in out and "x the time)" in out
    shift = json.loads(report.read_text())["shift_vs_first_model"]
    assert shift["reference"] == "onnxruntime:m.onnx"
    moved = shift["onnxruntime:m_int8.onnx"]["joints_mm"]
    assert moved["max"] >= moved["p90"] >= moved["median"] >= 0
