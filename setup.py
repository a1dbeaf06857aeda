"""Builds the CPU selective-scan kernel (handssca.runtime.scan._selective_scan_cpu).

Everything else about the package lives in pyproject.toml; only the compiler flags, which
depend on the compiler, need code.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildScanKernel(build_ext):
    def build_extensions(self):
        compiler = self.compiler.compiler_type
        for ext in self.extensions:
            if compiler == "msvc":
                ext.extra_compile_args = ["/O2", "/openmp", "/fp:fast", "/std:c++17"]
            elif sys.platform == "darwin":
                # Apple clang has no OpenMP by default; the kernel then runs on one thread.
                ext.extra_compile_args = ["-O3", "-std=c++17", "-ffast-math"]
            else:
                # -ffast-math (compile only, never at link time: a shared library linked with it
                # would flip the whole process to flush-to-zero) lets GCC call glibc's vector exp.
                ext.extra_compile_args = ["-O3", "-std=c++17", "-fopenmp", "-ffast-math", "-fvisibility=hidden"]
                ext.extra_link_args = ["-fopenmp"]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "handssca.runtime.scan._selective_scan_cpu",
            sources=["runtime/scan/csrc/selective_scan_cpu.cpp"],
            language="c++",
        )
    ],
    cmdclass={"build_ext": BuildScanKernel},
)
