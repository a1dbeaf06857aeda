"""handssca.runtime must work on a deployment box that has numpy but no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HIDE_TORCH = textwrap.dedent(
    """
    import sys

    class HideTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is hidden for this test")
            return None

    sys.meta_path.insert(0, HideTorch())
    """
)


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HIDE_TORCH + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_torch_is_really_hidden():
    result = run_without_torch("import torch")
    assert result.returncode != 0 and "torch is hidden" in result.stderr


def test_runtime_imports_and_scans_without_torch():
    result = run_without_torch(
        """
        import numpy as np
        import handssca.runtime as rt

        rng = np.random.default_rng(0)
        u = rng.standard_normal((1, 8, 33), dtype=np.float32)
        A = -np.ones((8, 4), np.float32)
        B = rng.standard_normal((1, 2, 4, 33), dtype=np.float32)
        out = rt.selective_scan_forward(u, u.copy(), A, B, B.copy(), delta_softplus=True)
        grads = rt.selective_scan_backward(np.ones_like(out), u, u.copy(), A, B, B.copy(), delta_softplus=True)
        assert out.shape == (1, 8, 33) and np.isfinite(out).all() and grads.dA.shape == (8, 4)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", rt.kernel_info()["isa"])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_cli_without_torch_says_what_to_install():
    result = run_without_torch("from handssca.cli import main; sys.exit(main(['info']))")
    assert result.returncode == 1
    assert "needs PyTorch" in result.stderr and "handssca[train]" in result.stderr


def test_mano_runtime_and_convert_without_torch(tmp_path):
    result = run_without_torch(
        f"""
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from mano_files import random_mano_arrays, write_official_pickle
        from handssca.runtime.mano import FINGERTIP_IDS, load_mano, mano_forward
        from handssca.cli import main

        src = {str(tmp_path / "MANO_RIGHT.pkl")!r}
        import pathlib
        write_official_pickle(random_mano_arrays(np.random.default_rng(0)), pathlib.Path(src))
        assert main(["mano", "convert", src, "-o", src + ".npz"]) == 0
        verts, joints = mano_forward(load_mano(src + ".npz"), np.zeros((2, 48)), np.zeros((2, 10)),
                                     flat_hand_mean=True, fingertip_ids=FINGERTIP_IDS["smplx"])
        assert verts.shape == (2, 778, 3) and joints.shape == (2, 21, 3)
        assert "torch" not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr


def test_no_runtime_module_imports_torch_anywhere():
    """Not even lazily inside a function: torch adapters live in handssca.models (TorchRunner)."""
    import ast

    runtime = Path(__file__).parent.parent / "runtime"
    offenders = []
    for path in sorted(runtime.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}:{node.lineno}" for n in names if n == "torch" or n.startswith("torch.")]
    assert not offenders, f"runtime modules import torch: {offenders}"
