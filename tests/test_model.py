"""The HandSSCA network: parameter budget, shapes, input checks, gradients, weight loading."""

from __future__ import annotations

import pytest
import torch

from handssca.errors import InputError
from handssca.models import (
    ATTENTION_KINDS,
    PAPER_PARAMETERS,
    HandSSCA,
    HandSSCAConfig,
    ResNet50,
    load_torchvision_resnet50,
    parameter_summary,
)
from handssca.models.attention import build_attention
from handssca.models.ss2d import SS2D, cross_merge, cross_scan
from handssca.ops import use_scan_backend

from conftest import TINY


def tiny(attention="ssca"):
    torch.manual_seed(0)
    return HandSSCA(HandSSCAConfig(attention=attention, **TINY))


@pytest.fixture(scope="module")
def full_counts():
    return {kind: dict(parameter_summary(HandSSCA(HandSSCAConfig(attention=kind)))) for kind in ATTENTION_KINDS}


def within(value, target, tolerance=0.03):
    return abs(value - target) <= tolerance * target


def test_parameter_counts_match_the_paper(full_counts):
    assert within(full_counts["ssca"]["total"], PAPER_PARAMETERS["model"])
    assert within(full_counts["ssca"]["attention (ssca)"], PAPER_PARAMETERS["ssca"])
    assert within(full_counts["ssa"]["attention (ssa)"], PAPER_PARAMETERS["ssa"])
    assert within(full_counts["self_attention"]["attention (self_attention)"], PAPER_PARAMETERS["self_attention"])
    assert full_counts["none"]["attention (none)"] == 0
    # The channel branch is the paper's "+0.01M" over SSA.
    assert 0.005e6 < full_counts["ssca"]["total"] - full_counts["ssa"]["total"] < 0.015e6
    assert full_counts["ssca"]["backbone.resnet50"] == 23_508_032  # torchvision ResNet-50 without its classifier


def test_full_size_forward_shapes():
    model = HandSSCA().eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 256, 256))
    assert out["heatmaps"].shape == (1, 21, 32, 32)
    assert out["joints_2d"].shape == (1, 21, 2)
    assert out["pose"].shape == (1, 48) and out["shape"].shape == (1, 10) and out["camera"].shape == (1, 3)
    torch.testing.assert_close(out["heatmaps"].sum(dim=(2, 3)), torch.ones(1, 21))
    assert ((out["joints_2d"] > 0) & (out["joints_2d"] < 1)).all()


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
@pytest.mark.parametrize("batch", [1, 4])
def test_tiny_forward_every_variant(attention, batch):
    model = tiny(attention).eval()
    with torch.inference_mode():
        out = model(torch.randn(batch, 3, 128, 128))
    assert out["heatmaps"].shape == (batch, 21, 16, 16)
    assert out["pose"].shape == (batch, 48)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_batch_elements_are_independent():
    model = tiny().eval()
    images = torch.randn(3, 3, 128, 128)
    with torch.inference_mode():
        together = model(images)["pose"]
        alone = torch.cat([model(images[i : i + 1])["pose"] for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    model = tiny().train()
    out = model(torch.randn(2, 3, 128, 128))
    loss = sum(v.float().pow(2).mean() for v in out.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert model.attention.channel.ss2d.A_logs.grad.abs().sum() > 0


def test_kernel_and_reference_give_the_same_model_output():
    model = tiny().eval()
    image = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        fast = model(image)
        with use_scan_backend("reference"):
            ref = model(image)
    for key in fast:
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (torch.randn(1, 4, 128, 128), ValueError, "3 colour channels"),
        (torch.randn(1, 128, 128, 3), ValueError, "3 colour channels"),
        (torch.randn(1, 3, 96, 96), ValueError, "128x128 crops"),
        (torch.randn(3, 128, 128), ValueError, r"\(batch, 3, 128, 128\)"),
        (torch.zeros(1, 3, 128, 128, dtype=torch.uint8), TypeError, "dtype torch.uint8"),
    ],
)
def test_bad_inputs_get_clear_errors(image, error, match):
    with pytest.raises(error, match=match):
        tiny("none")(image)


def test_config_validation():
    with pytest.raises(ValueError, match="attention 'transformer'"):
        HandSSCAConfig(attention="transformer")
    with pytest.raises(ValueError, match="multiple of 128"):
        HandSSCAConfig(input_size=200)
    with pytest.raises(ValueError, match="unknown model config keys"):
        HandSSCAConfig.from_dict({"attention": "ssa", "depth": 3})
    config = HandSSCAConfig(attention="ssa", **TINY)
    assert HandSSCAConfig.from_dict(config.to_dict()) == config


def test_cross_scan_visits_every_cell_once_per_direction():
    x = torch.randn(2, 5, 3, 7)
    scanned = cross_scan(x)
    assert scanned.shape == (2, 4, 5, 21)
    torch.testing.assert_close(scanned[:, 1, :, 1], x[:, :, 1, 0])  # column-major: second cell is (row 1, col 0)
    torch.testing.assert_close(scanned[:, 2, :, 0], x[:, :, -1, -1])  # reversed row-major starts bottom-right
    torch.testing.assert_close(cross_merge(scanned, 3, 7), 4 * x)


def test_ss2d_is_channels_last_and_sized_like_vmamba():
    block = SS2D(256, d_state=16, expand=2)
    assert sum(p.numel() for p in block.parameters()) == 567_296
    y = SS2D(16, expand=1)(torch.randn(2, 3, 5, 16))
    assert y.shape == (2, 3, 5, 16)


def test_channel_branch_scans_the_h_by_c_plane():
    ssca = build_attention("ssca", channels=32, size=16)
    assert ssca.channel.ss2d.d_model == 16  # W is the feature size
    with torch.no_grad():
        assert ssca(torch.randn(1, 32, 16, 16)).shape == (1, 32, 16, 16)


# ---------------------------------------------------------------------------------------------
# ImageNet weights from a torchvision file


def torchvision_state(model: ResNet50) -> dict:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["fc.bias"] = torch.zeros(1000)
    return state


def test_resnet_has_torchvision_parameter_names():
    keys = ResNet50().state_dict().keys()
    assert len(keys) == 318  # torchvision's resnet50 has 320 with fc.weight and fc.bias
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.bn3.bias"):
        assert key in keys


def test_load_torchvision_resnet50(tmp_path):
    torch.manual_seed(1)
    source = ResNet50()
    for p in source.parameters():
        p.data.normal_()
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(torchvision_state(source), path)
    target = ResNet50()
    load_torchvision_resnet50(target, path)
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_model_option_loads_imagenet_backbone(tmp_path):
    source = ResNet50(8)
    for p in source.parameters():
        p.data.uniform_()
    path = tmp_path / "resnet50-tiny.pth"
    torch.save(source.state_dict(), path)
    model = HandSSCA(HandSSCAConfig(**TINY), imagenet_weights=path)
    torch.testing.assert_close(model.backbone.resnet.conv1.weight, source.conv1.weight)


def test_load_torchvision_resnet50_errors(tmp_path):
    model = ResNet50()
    good = tmp_path / "good.pth"
    torch.save(torchvision_state(model), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.pth: cannot read"):
        load_torchvision_resnet50(model, truncated)
    with pytest.raises(InputError, match="missing.pth"):
        load_torchvision_resnet50(model, tmp_path / "missing.pth")
    wrong = tmp_path / "resnet18.pth"
    state = torchvision_state(model)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(state, wrong)
    with pytest.raises(ValueError, match=r"layer1.0.conv1.weight has shape \(64, 64, 3, 3\)"):
        load_torchvision_resnet50(model, wrong)
    del state["layer4.2.bn3.bias"]
    torch.save(state, wrong)
    with pytest.raises(ValueError, match="missing"):
        load_torchvision_resnet50(model, wrong)


@pytest.mark.parametrize("attention, scans", [("ssca", 2), ("ssa", 1), ("none", 0)])
def test_exported_graph_has_one_node_per_scan(attention, scans):
    model = tiny(attention).eval()
    program = torch.export.export(model, (torch.randn(1, 3, 128, 128),))
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.handssca.selective_scan.default) == scans
