import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A fresh random generator per test; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("HANDSSCA_TEST_SEED", 0)) or int.from_bytes(os.urandom(4), "little")
    print(f"{request.node.name}: HANDSSCA_TEST_SEED={seed}")
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def small_synthetic_set(tmp_path_factory):
    """A FreiHAND-layout synthetic set (6 training hands x 4 backgrounds, 4 held out), made once
    per test session; tests that damage it work on a copy."""
    from handssca.runtime.builtin_hand import build_builtin_hand
    from handssca.training.synthetic import SynthOptions, make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic") / "synth"
    options = SynthOptions(train=6, evaluation=4, seed=3)
    make_synthetic_dataset(root, *build_builtin_hand(), options, show_progress=False)
    return root


GPU_CHECK = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    """benchmarks/gpu_check.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sm90_kernel_library(tmp_path_factory):
    """The kernel library for sm_90 alone, built the way gpu_check builds it without CMake."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    check = load_gpu_check()
    real_which = shutil.which
    check.shutil.which = lambda name: None if name == "cmake" else real_which(name)
    try:
        return check.build_kernel(tmp_path_factory.mktemp("sm90"), "90")
    finally:
        check.shutil.which = real_which


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory):
    """The shipped demo checkpoint exported to ONNX once per test session, as a user would."""
    pytest.importorskip("torch")
    from handssca.demo import SHIPPED_CHECKPOINT
    from handssca.export import export_onnx
    from handssca.training.checkpoint import load_network

    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    export_onnx(load_network(SHIPPED_CHECKPOINT)[0], path, validate=False)
    return path
