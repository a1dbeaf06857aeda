"""ONNX export with one custom node per scan, run in ONNX Runtime through the CPU kernel."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from test_runtime_without_torch import run_without_torch

from handssca.export import ExportError, export_onnx
from handssca.export.scan_node import count_scan_nodes
from handssca.models import HandSSCA, HandSSCAConfig
from handssca.runtime.onnx_backend import OnnxModel, OnnxModelError
from handssca.runtime.scan_node import DOMAIN, OP_TYPE

TINY = dict(input_size=128, resnet_width=8, fpn_channels=32, mano_hidden=(64,))


def tiny(attention="ssca"):
    torch.manual_seed(0)
    return HandSSCA(HandSSCAConfig(attention=attention, **TINY)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny()
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return model, export_onnx(model, path)


def test_one_custom_node_per_scan_and_a_checked_file(exported):
    _, result = exported
    proto = onnx.load(result.path)
    assert result.scan_nodes == count_scan_nodes(proto) == 2
    node = next(n for n in proto.graph.node if n.op_type == OP_TYPE)
    assert node.domain == DOMAIN == "ai.onnx.contrib"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["delta_softplus"] == 1 and attrs["plugin_version"] == b"1" and "plugin_namespace" in attrs
    initializers = {i.name for i in proto.graph.initializer}
    assert node.input[2] in initializers or any(node.input[2] == n.output[0] for n in proto.graph.node)
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert inferred.graph.output[0].name == "heatmaps"


def test_metadata_in_file_and_sidecar(exported):
    model, result = exported
    sidecar = json.loads(result.sidecar.read_text())
    embedded = json.loads({p.key: p.value for p in onnx.load(result.path).metadata_props}["handssca"])
    assert sidecar == embedded
    assert sidecar["input"]["shape"] == ["batch", 3, 128, 128] and sidecar["input"]["colour_order"] == "RGB"
    assert sidecar["scan_node"]["op_type"] == OP_TYPE and sidecar["scan_node"]["count"] == 2
    assert len(sidecar["joint_order"]) == 21 and sidecar["model_config"]["attention"] == "ssca"
    assert len(sidecar["weights_sha256"]) == 64


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_pytorch(exported, batch):
    model, result = exported
    image = torch.randn(batch, 3, 128, 128)
    with torch.inference_mode():
        expected = model(image)
    got = OnnxModel(result.path).run(image.numpy())
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("attention, nodes", [("ssa", 1), ("none", 0)])
def test_node_count_follows_the_variant(tmp_path, attention, nodes):
    result = export_onnx(tiny(attention), tmp_path / "m.onnx", batch=1, validate=False)
    assert count_scan_nodes(onnx.load(result.path)) == nodes
    assert json.loads(result.sidecar.read_text())["input"]["shape"][0] == 1


def test_runtime_errors_are_clear(exported, tmp_path):
    _, result = exported
    model = OnnxModel(result.path)
    with pytest.raises(OnnxModelError, match="must be float32"):
        model.run(np.zeros((1, 3, 128, 128), np.float64))
    with pytest.raises(OnnxModelError, match=r"has shape \(1, 3, 96, 96\)"):
        model.run(np.zeros((1, 3, 96, 96), np.float32))
    with pytest.raises(OnnxModelError, match="must be an array of shape"):
        model.run(np.zeros((3, 128, 128), np.float32))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not a protobuf")
    with pytest.raises(OnnxModelError, match="junk.onnx: "):
        OnnxModel(junk)
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")


def test_failed_validation_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="ONNX Runtime disagrees with PyTorch"):
        export_onnx(tiny("none"), tmp_path / "bad.onnx", batch=1, tolerance=-1.0)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ExportError, match="must end in .onnx"):
        export_onnx(tiny("none"), tmp_path / "model.bin")


def test_exported_file_runs_without_torch(exported):
    _, result = exported
    out = run_without_torch(
        f"""
        import numpy as np
        from handssca.runtime.onnx_backend import OnnxModel
        model = OnnxModel({str(result.path)!r})
        outputs = model.run(np.zeros((2, 3, 128, 128), np.float32))
        assert outputs["pose"].shape == (2, 48) and np.isfinite(outputs["heatmaps"]).all()
        assert "torch" not in sys.modules
        print(model.metadata["scan_node"]["op_type"])
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == OP_TYPE


def test_plain_onnx_runtime_runs_the_single_file_through_extensions(exported):
    import onnxruntime as ort

    from handssca.runtime.scan_node import register_ort_scan_op

    model, result = exported
    options = ort.SessionOptions()
    options.register_custom_ops_library(register_ort_scan_op())
    session = ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    image = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        expected = model(image)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image.numpy()}), strict=True))
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_export_with_mano_in_the_graph(tmp_path):
    from handssca.runtime.builtin_hand import build_builtin_hand

    mano, tips = build_builtin_hand()
    model = tiny()
    result = export_onnx(model, tmp_path / "with_mano.onnx", mano=mano, mano_flat_hand_mean=False, fingertip_ids=tips)
    assert result.scan_nodes == 2
    meta = json.loads(result.sidecar.read_text())
    assert (
        meta["mano"]["in_graph"] and meta["mano"]["flat_hand_mean"] is False and "NOT the MANO" in meta["mano"]["model"]
    )
    image = torch.randn(2, 3, 128, 128)
    got = OnnxModel(result.path).run(image.numpy())
    from handssca.models.mano import MANOGraph

    graph = MANOGraph(mano, flat_hand_mean=False, fingertip_ids=tips)
    with torch.inference_mode():
        out = model(image)
        verts, joints = graph(out["pose"], out["shape"])
    worst_mm = 1e3 * max(np.abs(got["vertices"] - verts.numpy()).max(), np.abs(got["joints_3d"] - joints.numpy()).max())
    print(f"worst vertex/joint difference, ONNX Runtime vs PyTorch: {worst_mm:.2e} mm")
    assert got["vertices"].shape == (2, 778, 3) and worst_mm < 1e-3
    with pytest.raises(ExportError, match="needs mano_flat_hand_mean"):
        export_onnx(model, tmp_path / "x.onnx", mano=mano)
