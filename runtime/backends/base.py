"""The base every runner extends (see ``runner.py`` for the runners and how one is picked): the
input checks (an array, its shape, dtype, an empty batch, NaN or inf, the batch range) and the
warmup, written once, and the runners' error family."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from handssca.errors import HandSSCAError, RunError

WARMUP_RUNS = 2  # first-call allocations and kernel choices; more changes no timing here


def batch_problem(images: np.ndarray) -> str | None:
    """What makes a well-shaped batch unusable, in words (None when it is fine): no images, or
    NaN/inf values, which would come out as NaN meshes without a word."""
    if images.shape[0] == 0:
        return "the batch is empty (0 images)"
    # One pass without a temporary: NaN or inf anywhere makes the sum non-finite (a float64 sum of
    # normalised pixels cannot overflow); they are counted only then.
    if np.isfinite(images.sum(dtype=np.float64)):
        return None
    bad = images.size - int(np.count_nonzero(np.isfinite(images)))
    return f"the input has {bad} NaN or infinite values (a broken frame or crop?)"


def fixed_size(dim) -> int | None:
    """An axis's size when it is fixed; None for a dynamic axis (a name, 0, -1 or None)."""
    return dim if isinstance(dim, (int, np.integer)) and dim > 0 else None


class Runner(ABC):
    """The base of every runner. A subclass sets ``name``, ``metadata``, ``input_name``,
    ``input_shape`` (fixed sizes, or a name / -1 for a dynamic axis), ``input_dtype``,
    ``output_names`` and, where its engine has them, ``min_batch``/``max_batch``; and implements
    ``_run(images)``. ``error`` is the class of the one-line errors it raises."""

    error: type[HandSSCAError] = RunError
    name = "runner"
    metadata: dict
    input_name = "image"
    input_shape: list
    input_dtype = np.dtype(np.float32)
    output_names: list[str]
    min_batch = 1
    max_batch: int | None = None

    def check(self, images) -> int:
        """The batch size of ``images``, or this runner's error naming what is wrong with them."""
        expected = list(self.input_shape)
        where = f"{self.name}: input '{self.input_name}'"
        if not isinstance(images, np.ndarray) or images.ndim != len(expected):
            got = getattr(images, "shape", type(images).__name__)
            raise self.error(f"{where} must be an array of shape {expected}, got {got}")
        if images.dtype != self.input_dtype:
            raise self.error(f"{where} must be {self.input_dtype}, got {images.dtype}")
        for axis, (want, got) in enumerate(zip(expected, images.shape, strict=True)):
            if fixed_size(want) is not None and want != got:
                raise self.error(f"{where} has shape {images.shape}, expected {expected} (axis {axis})")
        problem = batch_problem(images)
        if problem:
            raise self.error(f"{self.name}: {problem}")
        batch = images.shape[0]
        if batch < self.min_batch or (self.max_batch is not None and batch > self.max_batch):
            raise self.error(
                f"{self.name}: batch {batch} is outside the engine's profile {self.min_batch}..{self.max_batch}"
            )
        return batch

    def run(self, images: np.ndarray, **options) -> dict[str, np.ndarray]:
        """Outputs by name for a checked batch (``options``: what a runner adds, e.g. timings)."""
        self.check(images)
        return self._run(images, **options)

    @abstractmethod
    def _run(self, images: np.ndarray, **options) -> dict[str, np.ndarray]:
        """The runner's own work on a batch ``check`` has passed."""

    def warmup(self, runs: int = WARMUP_RUNS) -> None:
        """Runs the smallest batch of zeros, so first-call allocations and kernel choices happen now."""
        batch, *rest = self.input_shape
        shape = [fixed_size(batch) or self.min_batch, *(fixed_size(d) or 1 for d in rest)]
        zeros = np.zeros(shape, self.input_dtype)
        for _ in range(runs):
            self.run(zeros)
