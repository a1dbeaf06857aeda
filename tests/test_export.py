"""ONNX export with one custom node per scan, run in ONNX Runtime through the CPU kernel."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from test_runtime_without_torch import run_without_torch

from handssca.errors import RunError
from handssca.export import export_onnx
from handssca.export.portable import lower_scan_nodes
from handssca.models import HandSSCA, HandSSCAConfig, TorchRunner
from handssca.ops import selective_scan_ref
from handssca.runtime.backends.compare import compare_models
from handssca.runtime.backends.onnx_runner import OnnxRunner
from handssca.runtime.scan.node import DOMAIN, OP_TYPE, count_scan_nodes, register_scan_schema

from conftest import TINY


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
    got = OnnxRunner(result.path).run(image.numpy())
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("attention, nodes", [("ssa", 1), ("none", 0)])
def test_node_count_follows_the_variant(tmp_path, attention, nodes):
    result = export_onnx(tiny(attention), tmp_path / "m.onnx", batch=1, validate=False)
    assert count_scan_nodes(onnx.load(result.path)) == nodes
    assert json.loads(result.sidecar.read_text())["input"]["shape"][0] == 1


def test_runtime_errors_are_clear(exported, tmp_path):
    _, result = exported
    model = OnnxRunner(result.path)
    with pytest.raises(RunError, match="must be float32"):
        model.run(np.zeros((1, 3, 128, 128), np.float64))
    with pytest.raises(RunError, match=r"has shape \(1, 3, 96, 96\)"):
        model.run(np.zeros((1, 3, 96, 96), np.float32))
    with pytest.raises(RunError, match="must be an array of shape"):
        model.run(np.zeros((3, 128, 128), np.float32))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not a protobuf")
    with pytest.raises(RunError, match="junk.onnx: "):
        OnnxRunner(junk)
    with pytest.raises(RunError, match="not found"):
        OnnxRunner(tmp_path / "missing.onnx")


def test_failed_validation_writes_nothing(tmp_path):
    with pytest.raises(RunError, match="ONNX Runtime disagrees with PyTorch"):
        export_onnx(tiny("none"), tmp_path / "bad.onnx", batch=1, tolerance=-1.0)
    assert not list(tmp_path.iterdir())
    with pytest.raises(RunError, match="must end in .onnx"):
        export_onnx(tiny("none"), tmp_path / "model.bin")


def test_exported_file_runs_without_torch(exported):
    _, result = exported
    out = run_without_torch(
        f"""
        import numpy as np
        from handssca.runtime.backends.onnx_runner import OnnxRunner
        model = OnnxRunner({str(result.path)!r})
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

    from handssca.runtime.scan.ort_bridge import register_ort_scan_op

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
    from handssca.runtime.mano.builtin import build_builtin_hand

    mano, fingertip_ids = build_builtin_hand()
    model = tiny()
    result = export_onnx(
        model, tmp_path / "with_mano.onnx", mano=mano, flat_hand_mean=False, fingertip_ids=fingertip_ids
    )
    assert result.scan_nodes == 2
    meta = json.loads(result.sidecar.read_text())
    assert (
        meta["mano"]["in_graph"] and meta["mano"]["flat_hand_mean"] is False and "NOT the MANO" in meta["mano"]["model"]
    )
    image = torch.randn(2, 3, 128, 128)
    got = OnnxRunner(result.path).run(image.numpy())
    from handssca.models.mano import MANOGraph

    graph = MANOGraph(mano, flat_hand_mean=False, fingertip_ids=fingertip_ids)
    with torch.inference_mode():
        out = model(image)
        verts, joints = graph(out["pose"], out["shape"])
    worst_mm = 1e3 * max(np.abs(got["vertices"] - verts.numpy()).max(), np.abs(got["joints_3d"] - joints.numpy()).max())
    print(f"worst vertex/joint difference, ONNX Runtime vs PyTorch: {worst_mm:.2e} mm")
    assert got["vertices"].shape == (2, 778, 3) and worst_mm < 1e-3
    with pytest.raises(RunError, match="needs flat_hand_mean"):
        export_onnx(model, tmp_path / "x.onnx", mano=mano)


def one_scan_node_model(dtype=onnx.TensorProto.FLOAT, softplus=1, opset=18):
    h, T = onnx.helper, onnx.TensorProto
    register_scan_schema()
    names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
    types = [dtype, dtype, T.FLOAT, dtype, dtype, T.FLOAT, T.FLOAT]
    shapes = [["b", "d", "l"]] * 2 + [["d", "n"], ["b", "g", "n", "l"], ["b", "g", "n", "l"], ["d"], ["d"]]
    node = h.make_node(
        OP_TYPE, names, ["y"], domain=DOMAIN, delta_softplus=softplus, plugin_version="1", plugin_namespace=""
    )
    graph = h.make_graph(
        [node],
        "one_scan",
        [h.make_tensor_value_info(n, t, s) for n, t, s in zip(names, types, shapes, strict=True)],
        [h.make_tensor_value_info("y", dtype, ["b", "d", "l"])],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset), h.make_opsetid(DOMAIN, 1)])


@pytest.mark.parametrize(
    "batch, dim, length, d_state, groups, softplus, half",
    [(3, 6, 7, 5, 2, 1, False), (1, 8, 33, 16, 4, 1, False), (2, 3, 1, 1, 1, 0, False), (2, 12, 19, 3, 4, 1, True)],
)
def test_portable_scan_matches_the_reference(rng, batch, dim, length, d_state, groups, softplus, half):
    from handssca.scan_bench import make_scan_inputs

    ort = pytest.importorskip("onnxruntime")
    dtype = onnx.TensorProto.FLOAT16 if half else onnx.TensorProto.FLOAT
    model = lower_scan_nodes(one_scan_node_model(dtype, softplus))
    assert count_scan_nodes(model) == 0 and all(n.domain == "" for n in model.graph.node)
    assert DOMAIN not in {o.domain for o in model.opset_import}
    onnx.checker.check_model(model, full_check=True)
    x = make_scan_inputs(rng, batch, dim, length, d_state, groups, with_z=False, softplus=bool(softplus))
    x["delta_bias"][0] = 25.0  # above softplus's threshold of 20
    if half:
        for k in ("u", "delta", "B", "C"):
            x[k] = x[k].astype(np.float16)
    x.pop("z")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, x)
    expected = selective_scan_ref(
        *(torch.from_numpy(x[k]) for k in ("u", "delta", "A", "B", "C", "D")),
        None,
        torch.from_numpy(x["delta_bias"]),
        bool(softplus),
    ).numpy()
    assert got.dtype == expected.dtype
    scale = np.abs(expected.astype(np.float32)).max()
    tolerance = 2e-3 if half else 2e-5
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=tolerance * max(scale, 1))


def test_portable_needs_a_recent_opset():
    with pytest.raises(RunError, match="opset 15"):
        lower_scan_nodes(one_scan_node_model(opset=14))


@pytest.mark.slow  # three exports with MANO; the fast subset has one (test_export_with_mano_in_the_graph)
def test_pytorch_custom_node_and_portable_agree_with_mano(tmp_path):
    """The three ways to run the network on the same input, compared by polygraphy."""
    from handssca.runtime.mano.builtin import build_builtin_hand

    mano, fingertip_ids = build_builtin_hand()
    model = tiny()
    kw = dict(mano=mano, flat_hand_mean=False, fingertip_ids=fingertip_ids, validate=False)
    custom = export_onnx(model, tmp_path / "custom.onnx", **kw)
    portable = export_onnx(model, tmp_path / "portable.onnx", scan="portable", **kw)
    assert custom.scan_nodes == 2 and portable.scan_nodes == 0
    assert json.loads(portable.sidecar.read_text())["scan_node"]["variant"] == "portable"
    from handssca.export.onnx_export import HandSSCAWithMANO
    from handssca.models.mano import MANOGraph

    reference = HandSSCAWithMANO(model, MANOGraph(mano, flat_hand_mean=False, fingertip_ids=fingertip_ids)).eval()
    image = np.random.default_rng(1).standard_normal((2, 3, 128, 128)).astype(np.float32)
    models = {
        "pytorch": TorchRunner(reference),
        "ort-custom": OnnxRunner(custom.path),
        "ort-portable": OnnxRunner(portable.path),
    }
    mesh_tolerance = 1e-6  # metres: 1e-3 mm
    tolerances = {"vertices": mesh_tolerance, "joints_3d": mesh_tolerance}
    tolerances.update({k: 1e-5 for k in ("heatmaps", "joints_2d", "pose", "shape", "camera")})
    comparison = compare_models(models, image, reference="pytorch", atol=tolerances, rtol=1e-4)
    for backend in ("ort-custom", "ort-portable"):
        worst_mm = 1e3 * max(comparison.diffs[backend][k].max_abs for k in ("vertices", "joints_3d"))
        print(f"{backend}: worst vertex/joint difference {worst_mm:.2e} mm; {comparison.summary(backend)}")
    assert comparison.passed, comparison.to_dict()


def test_fp16_export_keeps_scan_parameters_in_fp32_and_reports_its_error(tmp_path):
    model = tiny()
    result = export_onnx(model, tmp_path / "half.onnx", precision="fp16")
    proto = onnx.shape_inference.infer_shapes(onnx.load(result.path))
    types = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.value_info, *proto.graph.input]}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    node = next(n for n in proto.graph.node if n.op_type == OP_TYPE)
    F, H = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [types.get(name) for name in node.input] == [H, H, F, H, H, F, F]
    assert proto.graph.input[0].type.tensor_type.elem_type == F  # IO stays float32
    assert all(o.type.tensor_type.elem_type == F for o in proto.graph.output)
    meta = json.loads(result.sidecar.read_text())
    assert meta["precision"] == "fp16" and meta["input"]["dtype"] == "float32"
    diffs = result.max_abs_diff
    print("fp16 export vs PyTorch fp32, max |diff|: " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    assert 0 < max(diffs.values()) < 5e-2  # fp16 really ran, and not grossly wrong


def test_compare_models_fails_on_a_real_difference():
    x = np.ones((2, 3), np.float32)
    same = compare_models(
        {"a": lambda x: {"y": x * 2}, "b": lambda x: {"y": x * 2 + 1e-6}}, x, reference="a", atol=1e-5
    )
    assert same.passed and same.diffs["b"]["y"].max_abs == pytest.approx(1e-6, rel=0.1)
    off = compare_models({"a": lambda x: {"y": x * 2}, "b": lambda x: {"y": x * 2 + 1e-3}}, x, reference="a", atol=1e-5)
    assert not off.passed and off.worst("b")[0] == "y"


def test_runtime_refuses_files_it_cannot_run(exported, tmp_path):
    _, result = exported
    proto = onnx.load(result.path)
    newer = onnx.ModelProto()
    newer.CopyFrom(proto)
    next(o for o in newer.opset_import if o.domain == "").version = onnx.defs.onnx_opset_version() + 5
    (tmp_path / "newer.onnx").write_bytes(newer.SerializeToString())
    with pytest.raises(RunError, match=r"newer.onnx: opset \d+ is newer than this installation supports"):
        OnnxRunner(tmp_path / "newer.onnx")
    foreign = onnx.ModelProto()
    foreign.CopyFrom(proto)
    node = next(n for n in foreign.graph.node if n.op_type == OP_TYPE)
    node.op_type, node.name = "SelectiveScan", "scan_from_elsewhere"
    (tmp_path / "foreign.onnx").write_bytes(foreign.SerializeToString())
    with pytest.raises(RunError, match="'scan_from_elsewhere' .* no registered implementation"):
        OnnxRunner(tmp_path / "foreign.onnx")
    versioned = onnx.ModelProto()
    versioned.CopyFrom(proto)
    next(o for o in versioned.opset_import if o.domain == DOMAIN).version = 2
    with pytest.raises(RunError, match="node is version 2"):
        OnnxRunner(versioned.SerializeToString())
    with pytest.raises(RunError, match="optimization 'max'"):
        OnnxRunner(result.path, optimization="max")


def test_runtime_says_when_cuda_is_missing(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has ONNX Runtime's CUDA provider")
    with pytest.raises(RunError, match="no CUDAExecutionProvider .* onnxruntime-gpu"):
        OnnxRunner(exported[1].path, device="cuda")


def test_runtime_options_and_warmup(exported):
    model, result = exported
    runner = OnnxRunner(result.path, threads=1, optimization="basic")
    runner.warmup()
    image = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        expected = model(image)["pose"].numpy()
    np.testing.assert_allclose(runner.run(image.numpy())["pose"], expected, rtol=1e-4, atol=1e-5)


def test_an_empty_or_non_finite_batch_is_refused_in_one_line(exported):
    _, result = exported
    model = OnnxRunner(result.path)
    size = model.input_shape[2]
    with pytest.raises(RunError, match="the batch is empty"):
        model.run(np.zeros((0, 3, size, size), np.float32))
    image = np.zeros((1, 3, size, size), np.float32)
    image[0, 1, 5, 5] = np.nan
    with pytest.raises(RunError, match="1 NaN or infinite values"):
        model.run(image)


@pytest.mark.parametrize(
    "opset, with_mano",
    [(17, False), pytest.param(17, True, marks=pytest.mark.slow), pytest.param(19, False, marks=pytest.mark.slow)],
)
def test_the_file_is_the_opset_asked_for(tmp_path, opset, with_mano):
    """--opset N gives an opset-N file (17: TensorRT 8.6-era parsers), checked and run by ONNX
    Runtime against PyTorch, and the sidecar says the same."""
    from handssca.runtime.mano.builtin import build_builtin_hand

    mano_kw = {}
    if with_mano:
        mano, fingertip_ids = build_builtin_hand()
        mano_kw = {"mano": mano, "flat_hand_mean": False, "fingertip_ids": fingertip_ids}
    result = export_onnx(tiny(), tmp_path / "m.onnx", opset=opset, **mano_kw)
    proto = onnx.load(result.path)
    assert next(o.version for o in proto.opset_import if o.domain == "") == opset
    assert json.loads(result.sidecar.read_text())["opset"] == opset and result.comparison.passed
    assert result.scan_nodes == 2


def test_an_opset_outside_the_range_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(RunError, match=r"opset 16: this export writes opsets 17 to \d+"):
        export_onnx(tiny(), tmp_path / "m.onnx", opset=16)
    assert not list(tmp_path.iterdir())


def test_an_unwritable_output_is_found_before_the_work(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")

    def must_not_run(*args, **kwargs):
        raise AssertionError("exported although the output cannot be written")

    monkeypatch.setattr(torch.onnx, "export", must_not_run)
    from handssca.errors import OutputError

    with pytest.raises(OutputError, match=r"not_a_folder/m.onnx: cannot write it"):
        export_onnx(tiny(), blocker / "m.onnx")


# ---------------------------------------------------------------------------------------------
# Exact inference rewrites


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (64, 64), (3, 2)])
def test_smooth_then_pool_is_one_strided_conv(size):
    """The fold is exact at every input size, odd ones included (the pool's floor and the strided
    window agree): equal to float64 rounding, on fresh random weights and inputs."""
    from handssca.models.backbone import smooth_then_pool_as_one_conv

    generator = torch.Generator().manual_seed(hash(size) % 2**31)
    conv = torch.nn.Conv2d(5, 6, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.normal_(generator=generator)
        conv.bias.normal_(generator=generator)
    x = torch.randn(2, 5, *size, generator=generator, dtype=torch.float64)
    expected = torch.nn.functional.avg_pool2d(conv(x), 2, stride=2)
    folded = torch.nn.functional.conv2d(x, smooth_then_pool_as_one_conv(conv.weight), conv.bias, stride=2, padding=1)
    assert folded.shape == expected.shape
    torch.testing.assert_close(folded, expected, rtol=1e-12, atol=1e-12)


def test_the_rewritten_network_gives_the_same_outputs_and_keeps_its_weights():
    net = tiny()
    image = torch.randn(2, 3, 128, 128)
    keys = set(net.state_dict())
    with torch.inference_mode():
        expected = net(image)
        net.rewrite_for_inference()
        got = net(image)
    assert net.rewritten and set(net.state_dict()) == keys  # nothing new in checkpoints
    for name in expected:  # float32: rounding only
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5)
    net.train()
    assert not net.rewritten  # training changes the weights: the fold goes
    net.rewrite_for_inference().load_state_dict(net.state_dict())
    assert not net.rewritten  # so do new weights: a stale fold would be a quiet wrong answer


def test_the_export_writes_the_rewrites_and_proves_them_against_the_network_as_written(tmp_path, monkeypatch):
    model = tiny("none")
    result = export_onnx(model, tmp_path / "folded.onnx", batch=1)
    proto = onnx.load(result.path)
    assert "AveragePool" not in {n.op_type for n in proto.graph.node}
    kernels = [
        onnx.helper.get_attribute_value(a) for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute
        if a.name == "kernel_shape"
    ]  # fmt: skip
    assert [4, 4] in kernels
    assert json.loads(result.sidecar.read_text())["rewrites"] == [
        "FPN smooth2 3x3 conv + 2x2 average pool -> one 4x4 stride-2 conv"
    ]
    plain = export_onnx(model, tmp_path / "plain.onnx", batch=1, rewrite=False)
    assert "AveragePool" in {n.op_type for n in onnx.load(plain.path).graph.node}
    assert not model.rewritten  # the caller's network is left as it was

    # A wrong fold is caught by the export's own comparison with the network as written.
    import handssca.models.backbone as backbone

    monkeypatch.setattr(
        backbone, "smooth_then_pool_as_one_conv", lambda w: torch.flip(w, (2,)).repeat(1, 1, 2, 2)[..., :4, :4] / 4
    )
    with pytest.raises(RunError, match="ONNX Runtime disagrees with PyTorch"):
        export_onnx(model, tmp_path / "wrong.onnx", batch=1)
    assert not (tmp_path / "wrong.onnx").exists()
