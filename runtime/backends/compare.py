"""Compare the outputs of several models on the same images, with polygraphy's Comparator.

Each model is a runner of the one contract (``runtime.runner``: ``run(images) -> outputs``:
PyTorch, ONNX Runtime with the custom node, the portable file, TensorRT) or a plain function of
the images; polygraphy runs them on the same input and computes the differences, so the export
check, the benchmarks and a TensorRT engine are all judged by the same tool. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from handssca.errors import HandSSCAError

ImageFunction = Callable[[np.ndarray], Mapping[str, np.ndarray]]
INPUT = "image"


@dataclass
class OutputDiff:
    max_abs: float
    mean_abs: float
    max_rel: float
    passed: bool


@dataclass
class Comparison:
    """Each backend against the reference: {backend: {output: OutputDiff}}."""

    reference: str
    diffs: dict[str, dict[str, OutputDiff]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(d.passed for outputs in self.diffs.values() for d in outputs.values())

    def worst(self, backend: str) -> tuple[str, OutputDiff]:
        outputs = self.diffs[backend]
        name = max(outputs, key=lambda k: outputs[k].max_abs)
        return name, outputs[name]

    def summary(self, backend: str) -> str:
        return ", ".join(f"{k} {d.max_abs:.2g}" for k, d in self.diffs[backend].items())

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "tool": "polygraphy Comparator",
            "backends": {b: {k: vars(d) for k, d in outs.items()} for b, outs in self.diffs.items()},
        }


def _runner_class():
    from polygraphy.backend.base import BaseRunner

    class FunctionRunner(BaseRunner):
        """A polygraphy runner around a function of the images."""

        def __init__(self, name: str, fn: ImageFunction, feed: dict[str, np.ndarray]):
            super().__init__(name=name, prefix="handssca")
            self._fn, self._feed = fn, feed

        def get_input_metadata_impl(self):
            from polygraphy.common import TensorMetadata

            meta = TensorMetadata()
            for key, value in self._feed.items():
                meta.add(key, value.dtype, value.shape)
            return meta

        def infer_impl(self, feed_dict):
            import time

            start = time.perf_counter()
            outputs = {k: np.ascontiguousarray(v) for k, v in self._fn(feed_dict[INPUT]).items()}
            self.inference_time = time.perf_counter() - start
            return outputs

    return FunctionRunner


def compare_models(
    models: Mapping[str, object],
    images: np.ndarray,
    *,
    reference: str,
    atol: float | Mapping[str, float],
    rtol: float | Mapping[str, float] = 0.0,
) -> Comparison:
    """Runs every model (a runner with ``run(images)``, or a function of the images) on ``images``
    and compares each with ``reference``.

    An output passes where every element is within ``atol`` or ``rtol`` (polygraphy's simple
    comparison); both may be a per-output mapping.
    """
    try:
        from polygraphy.comparator import Comparator, SimpleCompareFunc
        from polygraphy.logger import G_LOGGER
    except ImportError as exc:
        raise HandSSCAError("comparing models needs polygraphy: pip install polygraphy") from exc
    if reference not in models:
        raise ValueError(f"reference model {reference!r} is not among {list(models)}")
    FunctionRunner = _runner_class()
    feed = {INPUT: images}
    names = [reference] + [m for m in models if m != reference]
    runners = [FunctionRunner(name, getattr(models[name], "run", models[name]), feed) for name in names]
    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.CRITICAL  # polygraphy reports every step on stdout
    try:
        results = Comparator.run(runners, data_loader=[feed])
        accuracy = Comparator.compare_accuracy(
            results,
            compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True),
            comparisons=[(0, i) for i in range(1, len(runners))],
        )
    finally:
        G_LOGGER.module_severity = severity
    comparison = Comparison(reference)
    for (_, other), iterations in accuracy[0].items():
        outputs = iterations[0]
        comparison.diffs[other] = {
            name: OutputDiff(
                max_abs=float(r.max_absdiff),
                mean_abs=float(r.mean_absdiff),
                max_rel=float(r.max_reldiff),
                passed=bool(r),
            )
            for name, r in outputs.items()
        }
    return comparison
