"""handssca.runtime must work on a deployment box that has numpy but no torch: here every package
that only an extra brings is hidden (tests/test_wheel.py installs the real box from the wheel)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# The import names of what the extras bring: [train], [serve], [trt], [cuda].
EXTRAS_ONLY = ("torch", "yaml", "smplx", "onnxscript", "tensorboard", "matplotlib", "tritonclient", "tensorrt",
               "pycuda", "mamba_ssm")  # fmt: skip
HIDE_TORCH = textwrap.dedent(
    f"""
    import sys

    class HideExtras:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EXTRAS_ONLY!r}:
                raise ModuleNotFoundError(f"{{name}} is hidden for this test", name=name)
            return None

    sys.meta_path.insert(0, HideExtras())
    """
)
PHOTO = Path(__file__).resolve().parent.parent / "handssca" / "assets" / "photos" / "handSrc.jpg"


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HIDE_TORCH + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_torch_is_really_hidden():
    result = run_without_torch("import torch")
    assert result.returncode != 0 and "torch is hidden" in result.stderr
    assert "yaml is hidden" in run_without_torch("import yaml").stderr


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
        from handssca.runtime.mano.model import FINGERTIP_IDS, mano_forward
        from handssca.runtime.mano.files import load_mano
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


def test_the_base_commands_run_with_every_extra_hidden(demo_onnx, tmp_path):
    """--help, infer (the hand found in a photograph), mano and doctor need no extra: the CLI
    imported YAML at the top, so --help alone ended in a traceback on a base install."""
    cli = "from handssca.__main__ import main; sys.exit(main())"
    for args in (
        ["--help"],
        ["webcam", "--help"],
        ["infer", str(PHOTO), "--model", str(demo_onnx), "-o", str(tmp_path / "out")],
        ["mano", "builtin", "-o", str(tmp_path / "hand.npz")],
        ["doctor"],
    ):
        result = subprocess.run(
            [sys.executable, "-c", HIDE_TORCH + cli, *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr[-2000:])
    assert list((tmp_path / "out").glob("*_hand0_*.obj"))


@pytest.mark.parametrize(
    "args, extra",
    [
        (["export", "-o", "x.onnx"], "train"),
        (["train"], "train"),
        (["info"], "train"),
        (["checkpoint", "slim", "a.pt", "-o", "b.pt"], "train"),
        (["bench"], "train"),
        (["serve", "check", "."], "serve"),
    ],
)
def test_a_command_that_needs_an_extra_names_it_in_one_line(args, extra, tmp_path):
    cli = "from handssca.__main__ import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", HIDE_TORCH + cli, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert f"pip install 'handssca[{extra}]'" in result.stderr


def test_the_extra_of_a_missing_module_comes_from_the_installed_metadata():
    from handssca.extras import missing_extra

    def extra(name):
        found = missing_extra(ModuleNotFoundError(f"No module named {name!r}", name=name))
        return None if found is None else str(found)

    assert "pip install 'handssca[train]'" in extra("torch") and "torch==2.13.0" in extra("torch")
    assert extra("yaml").startswith("needs pyyaml") and "[train]" in extra("yaml")
    assert "[serve]" in extra("tritonclient.grpc") and "[trt]" in extra("pycuda.driver")
    assert "[cuda]" in extra("mamba_ssm") and "[dev]" in extra("numba")
    assert extra("handssca.nowhere") is None and extra("not_a_dependency") is None


def test_ctrl_c_while_the_cli_loads_is_one_line(demo_onnx, tmp_path):
    """SIGINT at any moment of the start (numpy, OpenCV and ONNX Runtime loading) ends in
    'interrupted' and status 130, never a KeyboardInterrupt traceback."""
    command = [sys.executable, "-m", "handssca", "infer", str(PHOTO), "--model", str(demo_onnx), "-o", str(tmp_path)]
    # One whole run first: its bytecode written, the start is the program's, not the interpreter's
    # own (a SIGINT inside Python's site import is Python's to report).
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    for delay in (0.2, 0.35, 0.5, 0.65, 0.8, 1.0):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        if process.returncode == 0:  # it finished first
            continue
        assert "Traceback" not in err and process.returncode in (130, -signal.SIGINT), (delay, err[-2000:])
        assert err.strip().endswith("interrupted") or process.returncode == -signal.SIGINT


def test_help_shows_no_default_for_a_flag():
    """'--no-smooth ... (default: True)' read as if the flag were on by default."""
    from handssca.cli import build_parser
    from handssca.dispatch import adopt_defaults, subcommands

    for name, command in subcommands(build_parser()).items():
        if name in ("webcam", "infer", "export"):
            adopt_defaults(command)
            text = command.format_help()
            assert "(default: True)" not in text and "(default: False)" not in text, name
            assert "(default: 2)" in text or name != "webcam"  # other defaults are shown


def test_an_import_that_ctrl_c_broke_is_one_line(monkeypatch, capsys):
    """A native module interrupted while it initialises (ONNX Runtime's pybind11 one) raises
    ImportError("initialization failed") in the KeyboardInterrupt's context: still 'interrupted', 130."""
    from handssca import cli

    def broken_import(argv):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None

    monkeypatch.setattr(cli, "_main", broken_import)
    assert cli.main(["infer", "photo.jpg"]) == 130
    assert capsys.readouterr().err == "handssca infer: interrupted\n"

    def plain_import_error(argv):
        raise ImportError("initialization failed")

    monkeypatch.setattr(cli, "_main", plain_import_error)
    with pytest.raises(ImportError):  # not an interrupt: a bug keeps its traceback
        cli.main(["infer", "photo.jpg"])
