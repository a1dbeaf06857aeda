"""The selective-scan micro-benchmark, written once: the model's scan shapes (from its config),
random scan arguments, and one routine that times a dict of implementations on them.

``handssca bench``, ``benchmarks/bench_selective_scan_cpu.py`` and ``benchmarks/gpu_check.py``
all take their shapes and inputs from here and time through ``time_scans``; what differs between
them is only which implementations they bring. numpy only at import (shapes need the network's
``DIRECTIONS``, so torch, when asked for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handssca.measure import time_interleaved, time_runner

SCAN_FIELDS = ("batch", "dim", "L", "N", "G")


def model_scan_shapes(config, batch: int = 1) -> dict[str, tuple[int, int, int, int, int]]:
    """(batch, dim, L, N, G) of each selective scan the network of ``config`` (a HandSSCAConfig)
    runs per forward pass, as handssca/models/attention.py and ss2d.py build them:

    * ``spatial``: SS2D over the H x W feature map with the FPN channels as features, so
      d_inner = spatial_expand * fpn_channels and L = H * W;
    * ``channel`` (SSCA only): SS2D over the H x C plane with the W columns as features, so
      d_inner = channel_expand * W and L = H * fpn_channels;

    each scanned in ``DIRECTIONS`` directions at once: dim = DIRECTIONS * d_inner, G = DIRECTIONS,
    N = d_state. Attention without a scan ("none", "self_attention") has none."""
    from handssca.models.ss2d import DIRECTIONS

    side, channels = config.feature_size, config.fpn_channels
    planes = {}  # scan -> (d_model, expand, L)
    if config.attention in ("ssa", "ssca"):
        planes["spatial"] = (channels, config.spatial_expand, side * side)
    if config.attention == "ssca":
        planes["channel"] = (side, config.channel_expand, side * channels)
    return {
        name: (batch, DIRECTIONS * expand * d_model, length, config.d_state, DIRECTIONS)
        for name, (d_model, expand, length) in planes.items()
    }


def make_scan_inputs(
    rng, batch, dim, length, d_state, groups, dtype=np.float32, with_D=True, with_z=True, with_bias=True, softplus=True
):
    """Random scan arguments (numpy, ``rng`` a numpy Generator) in the ranges the network
    produces, for tests and benchmarks alike: negative A, and delta around softplus's knee
    (or, without softplus, already positive, as a step size must be)."""

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    delta = normal(batch, dim, length, scale=0.7) - 1.0
    if not softplus:
        delta = np.log1p(np.exp(delta)) + 0.3
    return {
        "u": normal(batch, dim, length),
        "delta": delta,
        "A": (-np.exp(rng.standard_normal((dim, d_state)) * 0.5)).astype(dtype),
        "B": normal(batch, groups, d_state, length),
        "C": normal(batch, groups, d_state, length),
        "D": normal(dim) if with_D else None,
        "z": normal(batch, dim, length) if with_z else None,
        # Without softplus the step is delta + delta_bias itself, which must stay positive: a negative
        # bias over many steps grows the state past float32's range (the float64 reference too).
        "delta_bias": (normal(dim, scale=0.3) if softplus else np.abs(normal(dim, scale=0.3))) if with_bias else None,
    }


def benchmark_inputs(shape: tuple[int, int, int, int, int], seed: int = 0) -> dict[str, np.ndarray | None]:
    """The scan's arguments at ``shape`` (batch, dim, L, N, G) as the network calls it (no z gate)."""
    return make_scan_inputs(np.random.default_rng(seed), *shape, with_z=False)


@dataclass(frozen=True)
class ScanImpl:
    """One implementation to time. ``bind(inputs)`` gets the numpy arguments once (convert them
    there, outside the timing) and returns the call to time; ``context`` (a callable giving a
    context manager: inference mode, a forced scan backend) is entered around its timing."""

    bind: Callable[[dict], Callable[[], object]]
    warmup: int = 1
    runs: int = 10
    cuda: bool = False  # timed with CUDA events
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def time_scans(
    shapes: dict[str, tuple[int, int, int, int, int]],
    implementations: dict[str, ScanImpl | str],
    *,
    batches=None,
    interleaved=(),
    after=None,
    seed: int = 0,
) -> list[dict]:
    """For each scan in ``shapes`` (``model_scan_shapes``), at its batch or each of ``batches``:
    one set of inputs, every implementation bound to them and timed (``measure.time_runner``;
    the names in ``interleaved`` together by ``measure.time_interleaved``, with the first one's
    warm-up and runs, for ratios between them). An implementation given as a string is skipped
    with that reason. Rows {"scan", "shape", "timings": {name: stats or {"skipped": reason}}},
    plus whatever ``after(inputs, calls, timings)`` returns (parity on the same inputs)."""
    rows = []
    for name, shape in shapes.items():
        for batch in batches or (shape[0],):
            sized = (batch, *shape[1:])
            inputs = benchmark_inputs(sized, seed)
            calls = {k: impl.bind(inputs) for k, impl in implementations.items() if isinstance(impl, ScanImpl)}
            timings = {}
            together = [k for k in interleaved if k in calls]
            for key, impl in implementations.items():
                if isinstance(impl, str):
                    timings[key] = {"skipped": impl}
                elif key in together:
                    if key == together[0]:
                        with contextlib.ExitStack() as stack:
                            for k in together:
                                stack.enter_context(implementations[k].context())
                            cuda = {k for k in together if implementations[k].cuda}
                            timings.update(
                                time_interleaved({k: calls[k] for k in together}, impl.warmup, impl.runs, cuda=cuda)
                            )
                else:
                    with impl.context():
                        timings[key] = time_runner(calls[key], impl.warmup, impl.runs, cuda=impl.cuda)
            row = {"scan": name, "shape": dict(zip(SCAN_FIELDS, sized, strict=True)), "timings": timings}
            if after is not None:
                row.update(after(inputs, calls, timings))
            rows.append(row)
    return rows
