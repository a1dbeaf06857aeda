import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from handssca.configs import config_path
from handssca.training.config import read_yaml_mapping

TINY_CONFIG = config_path("model/tiny.yaml")
# The tiny network's fields, as configs/model/tiny.yaml gives them, less its attention (tests
# choose it): HandSSCAConfig(**TINY), and the same as --set overrides for train and export.
TINY = {
    name: tuple(value) if isinstance(value, list) else value
    for name, value in read_yaml_mapping(TINY_CONFIG)["model"].items()
    if name != "attention"
}
TINY_OVERRIDES = [f"model.{name}={list(v) if isinstance(v, tuple) else v}" for name, v in TINY.items()]


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
    from handssca.runtime.mano.builtin import build_builtin_hand
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


@pytest.fixture(scope="session")
def tiny_network():
    """The tiny network (configs/model/tiny.yaml), untrained, seed 0, in eval mode: made once."""
    torch = pytest.importorskip("torch")
    from handssca.models import HandSSCA, HandSSCAConfig

    torch.manual_seed(0)
    return HandSSCA(HandSSCAConfig(**TINY)).eval()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_network, tmp_path_factory):
    """The tiny network exported to ONNX once per test session (tests must not change the file)."""
    from handssca.export import export_onnx

    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(tiny_network, path, validate=False)
    return path


@pytest.fixture
def no_proxy(monkeypatch):
    """Clients connect straight to our local servers whatever proxy the environment names
    (websockets' clients honour *_proxy variables)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
