"""The selective-scan op: the reference's semantics, and every implementation against it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from handssca.ops import (
    available_backends,
    describe_scan_backend,
    scan_backend,
    selective_scan,
    selective_scan_ref,
    use_scan_backend,
)
from handssca.runtime import kernel_info, selective_scan_backward, selective_scan_forward
from handssca.scan_bench import make_scan_inputs

ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

# (batch, dim, L, N, G): odd lengths, N=1 and N=16, one group and four.
SHAPES = [
    (1, 4, 1, 1, 1),
    (2, 8, 37, 16, 4),
    (1, 6, 63, 1, 2),
    (3, 12, 129, 16, 1),
    (2, 20, 17, 5, 4),
]


def to_torch(inputs, requires_grad=False):
    return {
        k: None if v is None else torch.from_numpy(v.copy()).requires_grad_(requires_grad) for k, v in inputs.items()
    }


def loop_scan(u, delta, A, B, C, D, z, delta_bias, softplus):
    """The S6 recurrence written as plain scalar loops: an independent check of the reference."""
    batch, dim, length = u.shape
    groups, n_state = B.shape[1], A.shape[1]
    out = np.zeros((batch, dim, length))
    for b in range(batch):
        for d in range(dim):
            g = d // (dim // groups)
            h = [0.0] * n_state
            for t in range(length):
                dt = float(delta[b, d, t]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
                if softplus and dt <= 20:
                    dt = math.log1p(math.exp(dt))
                y = 0.0
                for n in range(n_state):
                    h[n] = math.exp(dt * A[d, n]) * h[n] + dt * B[b, g, n, t] * u[b, d, t]
                    y += h[n] * C[b, g, n, t]
                if D is not None:
                    y += D[d] * u[b, d, t]
                if z is not None:
                    zt = float(z[b, d, t])
                    y *= zt / (1 + math.exp(-zt))
                out[b, d, t] = y
    return out


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("shape", [(2, 4, 9, 3, 2), (1, 3, 5, 1, 1)])
def test_reference_matches_scalar_recurrence(rng, shape, softplus):
    inputs = make_scan_inputs(rng, *shape, dtype=np.float64, softplus=softplus)
    inputs["delta"][0, 0, :2] = 25.0  # above softplus's threshold: passes through unchanged
    expected = loop_scan(*[inputs[k] for k in ORDER], softplus)
    out = selective_scan_ref(**to_torch(inputs), delta_softplus=softplus)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_reference_returns_last_state_and_accepts_ungrouped_B(rng):
    inputs = make_scan_inputs(rng, 2, 4, 7, 3, 1, dtype=np.float64)
    t = to_torch(inputs)
    out_grouped, last = selective_scan_ref(**t, delta_softplus=True, return_last_state=True)
    t["B"], t["C"] = t["B"][:, 0], t["C"][:, 0]  # (batch, N, L), mamba-ssm's other layout
    out_plain = selective_scan_ref(**t, delta_softplus=True)
    assert last.shape == (2, 4, 3)
    torch.testing.assert_close(out_grouped, out_plain)


def test_reference_matches_mamba_ssm_reference(rng):
    mamba = pytest.importorskip("mamba_ssm.ops.selective_scan_interface", exc_type=ImportError)
    inputs = make_scan_inputs(rng, 2, 8, 33, 16, 4, dtype=np.float32)
    ours = selective_scan_ref(**to_torch(inputs), delta_softplus=True)
    theirs = mamba.selective_scan_ref(**to_torch(inputs), delta_softplus=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [(True, True, True, True), (False, False, False, False), (True, False, True, True)])
def test_cpu_kernel_forward_and_backward_match_reference(rng, shape, dtype, options):
    with_D, with_z, with_bias, softplus = options
    inputs = make_scan_inputs(
        rng, *shape, dtype=dtype, with_D=with_D, with_z=with_z, with_bias=with_bias, softplus=softplus
    )
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)

    out = selective_scan_forward(**inputs, delta_softplus=softplus)
    t = to_torch(inputs, requires_grad=True)
    ref = selective_scan_ref(**t, delta_softplus=softplus)
    assert out.dtype == dtype and out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out, ref.detach().numpy(), **tol)

    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = selective_scan_backward(dout, **inputs, delta_softplus=softplus)
    present = [k for k in ORDER if inputs[k] is not None]
    expected = torch.autograd.grad(ref, [t[k] for k in present], torch.from_numpy(dout))
    for name, exp in zip(present, expected, strict=True):
        got = getattr(grads, "d" + name)
        scale = max(1.0, float(exp.abs().max()))  # dA and dD sum over batch and L
        np.testing.assert_allclose(got / scale, exp.numpy() / scale, err_msg=f"d{name}", **tol)
    for name in ORDER:
        if inputs[name] is None:
            assert getattr(grads, "d" + name, None) is None


def test_cpu_kernel_float_decays_in_every_range(rng):
    """float32 takes an inline exp for channels whose dt * A are all <= 0 and libm's otherwise;
    both, and decays far below float's range, must match the float64 reference."""
    inputs = make_scan_inputs(rng, 2, 6, 300, 16, 2, dtype=np.float64, with_z=False, softplus=False)
    inputs["A"][1, 3] = 0.05  # channel 1: a growing state, so libm's exp
    inputs["delta"][:, 2, 7] = -0.2  # channel 2: a negative step (no softplus), so libm's exp
    inputs["A"][4] *= 200.0  # channel 4: dt * A down to about -1e3, under exp's float range
    expected = selective_scan_ref(**to_torch(inputs), delta_softplus=False).numpy()
    single = {k: None if v is None else v.astype(np.float32) for k, v in inputs.items()}
    got = selective_scan_forward(**single, delta_softplus=False)
    assert np.isfinite(got).all()
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    np.testing.assert_array_less(np.abs(got - expected) / scale, 2e-5)


def test_cpu_kernel_is_deterministic_across_thread_counts(rng):
    inputs = make_scan_inputs(rng, 2, 16, 65, 16, 4)
    one = selective_scan_forward(**inputs, delta_softplus=True, num_threads=1)
    two = selective_scan_forward(**inputs, delta_softplus=True, num_threads=2)
    np.testing.assert_array_equal(one, two)
    dout = np.ones_like(one)
    g1 = selective_scan_backward(dout, **inputs, delta_softplus=True, num_threads=1)
    g2 = selective_scan_backward(dout, **inputs, delta_softplus=True, num_threads=2)
    np.testing.assert_allclose(g1.dB, g2.dB, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(g1.dA, g2.dA)


def test_cpu_kernel_rejects_bad_input(rng):
    inputs = make_scan_inputs(rng, 1, 8, 5, 4, 2)
    with pytest.raises(ValueError, match=r"delta has shape \(1, 8, 4\), expected \(1, 8, 5\)"):
        selective_scan_forward(**{**inputs, "delta": inputs["delta"][..., :4]})
    with pytest.raises(ValueError, match="not divisible"):
        selective_scan_forward(**{**inputs, "B": np.zeros((1, 3, 4, 5), np.float32)})
    with pytest.raises(ValueError, match="floating-point"):  # an option error, as every argument's
        selective_scan_forward(**{**inputs, "u": inputs["u"].astype(np.int32)})
    with pytest.raises(ValueError, match=r"A must have shape \(8, N\)"):
        selective_scan_forward(**{**inputs, "A": inputs["A"][:4]})


def test_kernel_info_names_the_instruction_set():
    info = kernel_info()
    flags = set(open("/proc/cpuinfo").read().split()) if Path("/proc/cpuinfo").is_file() else set()
    if "avx512f" in flags and "avx512bw" in flags and "fma" in flags:
        assert info["isa"] == "x86-64-v4 (AVX-512, FMA)"
    elif {"avx2", "fma", "bmi2"} <= flags:
        assert info["isa"] == "x86-64-v3 (AVX2, FMA)"
    assert info["max_threads"] >= 1


def test_every_x86_clone_of_the_kernel_has_fma():
    """target_clones("avx2") alone compiles no FMA; the x86-64-v3 and v4 clones must have it (and
    v4 on 512-bit registers), whichever CPU runs the tests. Read from the built library's code."""
    import platform
    import re
    import shutil
    import subprocess

    from handssca.runtime.scan import _selective_scan_cpu

    if platform.machine() != "x86_64" or shutil.which("objdump") is None:
        pytest.skip("needs an x86-64 build and binutils' objdump")
    text = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", _selective_scan_cpu.__file__],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    clones: dict[str, str] = {}
    for clone, body in re.findall(r"<[^>]*scan_tile[^>]*\.arch_(x86_64_v[34])>:\n(.*?)\n\n", text, re.S):
        clones[clone] = clones.get(clone, "") + body
    assert set(clones) == {"x86_64_v3", "x86_64_v4"}, "the library has no x86-64-v3/v4 clones of the tile kernel"
    assert "vfmadd" in clones["x86_64_v3"] and re.search(r"vfmadd\S*\s+%zmm", clones["x86_64_v4"])


# (batch, dim, L, N, G) around the tiled forward's edges: 16 channels of a group per tile (15,
# 16, 17, 33 per group), 16-step transposes and 64-step chunks (L 15 ... 200), N padded to 16
# (1, 7, 16) and N = 17, which takes the per-channel path.
TILE_EDGES = [
    (1, 15, 17, 16, 1),
    (2, 32, 64, 16, 2),
    (1, 34, 65, 7, 2),
    (1, 66, 200, 16, 2),
    (3, 17, 16, 1, 1),
    (1, 33, 129, 17, 1),
    (1, 16, 15, 16, 1),
]


@pytest.mark.parametrize("shape", TILE_EDGES)
@pytest.mark.parametrize("gated", [False, True])
def test_cpu_kernel_tiles_match_reference_at_their_edges(shape, gated):
    rng = np.random.default_rng(abs(hash((shape, gated))) % 2**32)  # fresh inputs per case
    inputs = make_scan_inputs(rng, *shape, dtype=np.float64, with_z=gated)
    # softplus at and around PyTorch's threshold (20) and far below 0, where it underflows
    inputs["delta"][0, 0, : min(5, shape[2])] = [25.0, 20.0, 19.99, -30.0, -100.0][: min(5, shape[2])]
    expected = selective_scan_ref(**to_torch(inputs), delta_softplus=True).numpy()
    single = {k: None if v is None else v.astype(np.float32) for k, v in inputs.items()}
    got = selective_scan_forward(**single, delta_softplus=True)
    scale = np.abs(expected).max(axis=-1, keepdims=True) + 1e-6
    np.testing.assert_array_less(np.abs(got - expected) / scale, 2e-5)


# ---------------------------------------------------------------------------------------------
# The registered op


def test_op_picks_the_cpu_kernel_and_says_so():
    assert scan_backend("cpu") == "cpu-kernel"
    assert available_backends("cpu") == ["cpu-kernel", "reference"]
    assert describe_scan_backend("cpu").startswith("cpu-kernel")
    with use_scan_backend("reference"):
        assert scan_backend("cpu") == "reference"
        assert describe_scan_backend("cpu").startswith("reference")
    assert scan_backend("cpu") == "cpu-kernel"


def test_op_backend_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        with use_scan_backend("fast"):
            pass
    with use_scan_backend("mamba-ssm"), pytest.raises(RuntimeError, match="not available on cpu"):
        scan_backend("cpu")
    monkeypatch.setenv("HANDSSCA_SCAN_BACKEND", "reference")
    assert scan_backend("cpu") == "reference"
    monkeypatch.setenv("HANDSSCA_SCAN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="HANDSSCA_SCAN_BACKEND='bogus'"):
        scan_backend("cpu")


@pytest.mark.parametrize("backend", ["cpu-kernel", "reference"])
def test_op_forward_and_autograd_match_reference(rng, backend):
    inputs = make_scan_inputs(rng, 2, 8, 31, 16, 4)
    a = to_torch(inputs, requires_grad=True)
    b = to_torch(inputs, requires_grad=True)
    with use_scan_backend(backend):
        out = selective_scan(**a, delta_softplus=True)
    ref = selective_scan_ref(**b, delta_softplus=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, list(a.values()), dout)
    exp = torch.autograd.grad(ref, list(b.values()), dout)
    for name, g, e in zip(a, got, exp, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3, msg=lambda m, name=name: f"d{name}: {m}")


def test_op_gradcheck_float64_cpu_kernel(rng):
    inputs = make_scan_inputs(rng, 2, 4, 9, 3, 2, dtype=np.float64)
    t = to_torch(inputs, requires_grad=True)
    assert scan_backend("cpu") == "cpu-kernel"
    assert torch.autograd.gradcheck(
        lambda *args: selective_scan(*args, delta_softplus=True), tuple(t[k] for k in ORDER), eps=1e-6, atol=1e-6
    )


def test_op_gradcheck_without_optional_inputs(rng):
    inputs = make_scan_inputs(
        rng, 1, 4, 7, 2, 1, dtype=np.float64, with_D=False, with_z=False, with_bias=False, softplus=False
    )
    t = to_torch(inputs, requires_grad=True)
    args = tuple(t[k] for k in ("u", "delta", "A", "B", "C"))
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a), args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_op_half_inputs_keep_their_dtype(rng, dtype):
    inputs = make_scan_inputs(rng, 1, 8, 19, 16, 4)
    t = {k: None if v is None else v.to(dtype) for k, v in to_torch(inputs).items()}
    t["A"], t["D"], t["delta_bias"] = (to_torch(inputs)[k] for k in ("A", "D", "delta_bias"))  # fp32, as in models
    out = selective_scan(**t, delta_softplus=True)
    ref = selective_scan_ref(**t, delta_softplus=True)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_op_passes_torch_opcheck(rng):
    inputs = make_scan_inputs(rng, 1, 4, 6, 2, 2)
    t = to_torch(inputs, requires_grad=True)
    torch.library.opcheck(torch.ops.handssca.selective_scan.default, (*[t[k] for k in ORDER], True))


def test_op_rejects_bad_shapes(rng):
    t = to_torch(make_scan_inputs(rng, 1, 8, 5, 4, 2))
    with pytest.raises(ValueError, match=r"z has shape"):
        selective_scan(**{**t, "z": t["z"][:, :, :3]})
    with pytest.raises(ValueError, match="u must be"):
        selective_scan(**{**t, "u": t["u"][0]})


def test_torch_export_sees_one_node_per_scan(rng):
    class Scan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(-torch.rand(8, 4) - 0.5)
            self.D = torch.nn.Parameter(torch.ones(8))

        def forward(self, u, delta, B, C):
            return selective_scan(u, delta, self.A, B, C, self.D, None, None, True)

    t = to_torch(make_scan_inputs(rng, 1, 8, 10, 4, 2))
    program = torch.export.export(Scan(), (t["u"], t["delta"], t["B"], t["C"]))
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.handssca.selective_scan.default) == 1
    assert len(targets) == 1
