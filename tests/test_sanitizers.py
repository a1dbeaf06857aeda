"""The CPU scan kernel built with AddressSanitizer and UndefinedBehaviorSanitizer runs its tests clean.

The kernel (runtime/scan/csrc/selective_scan_cpu.cpp) is compiled again with
``-fsanitize=address,undefined -fno-sanitize-recover=undefined``, and the kernel's tests in
tests/test_selective_scan.py run in a subprocess that loads that build in place of the installed
one (a sitecustomize puts it in sys.modules first; libasan is preloaded, since python itself is
not built with it). Any out-of-bounds access, use after free, misaligned access, signed overflow or
shift out of range the sanitizers see stops the run with a report (a kernel reading one float
past a row was caught this way when the test was written).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "runtime" / "scan" / "csrc" / "selective_scan_cpu.cpp"
SITE = """import importlib.util, os, sys
name, library = "handssca.runtime.scan._selective_scan_cpu", os.environ["SANITIZED_KERNEL"]
spec = importlib.util.spec_from_file_location(name, library)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["handssca.runtime.scan._selective_scan_cpu"] = module
"""
CHECK = """
import ctypes, os, handssca.runtime.scan.kernel as scan
assert scan._kernel.__file__ == os.environ["SANITIZED_KERNEL"], scan._kernel.__file__
ctypes.CDLL(None).__asan_init  # the sanitizer's runtime is in the process
print("sanitized kernel loaded")
"""

pytestmark = pytest.mark.slow  # the kernel rebuilt with ASan and UBSan


def test_the_cpu_kernel_tests_run_clean_under_asan_and_ubsan(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    asan = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not Path(asan).is_file():
        pytest.skip("g++ has no AddressSanitizer runtime")
    library = tmp_path / f"_selective_scan_cpu{sysconfig.get_config_var('EXT_SUFFIX')}"
    command = [
        "g++", "-O1", "-g", "-std=c++17", "-fopenmp", "-ffast-math", "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-shared", "-fPIC",
        f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(library),
    ]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITE)
    env = {
        **os.environ,
        "LD_PRELOAD": asan,
        # Reports go to files: pytest's capture would swallow them when the process stops. Leaks
        # are not checked (python never frees some of its own allocations).
        "ASAN_OPTIONS": f"detect_leaks=0:exitcode=99:log_path={tmp_path / 'asan'}",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:exitcode=98:log_path={tmp_path / 'ubsan'}",
        "PYTHONPATH": str(tmp_path / "site"),
        "SANITIZED_KERNEL": str(library),
    }
    check = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "sanitized kernel loaded" in check.stdout, check.stderr[-3000:]
    kernel_tests = str(ROOT / "tests" / "test_selective_scan.py")
    # addopts=-ra: one process (the sanitizers' runtime is preloaded into it), with or without xdist
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", kernel_tests]
    tests += ["-k", "cpu_kernel"]
    run = subprocess.run(tests, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    reports = "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*san.*")))
    assert run.returncode == 0 and not reports, (reports or run.stdout + run.stderr)[-4000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
