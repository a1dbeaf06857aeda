"""Random selective-scan problems shared by the op tests."""

from __future__ import annotations

import numpy as np


def make_scan_inputs(
    rng, batch, dim, length, d_state, groups, dtype=np.float32, with_D=True, with_z=True, with_bias=True, softplus=True
):
    """Inputs in the ranges the network produces: negative A, and delta around softplus's knee
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
