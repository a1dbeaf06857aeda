"""VMamba's SS2D: a selective-scan mixer over a 2D grid, scanned in four directions.

Written from the VMamba paper and its public code's structure (in-projection, depthwise conv,
SiLU, cross-scan, selective scan, cross-merge, LayerNorm, SiLU(z) gate, out-projection). The
four directions are row-major, column-major and both reversed; they enter the selective scan
as its G=4 groups of B and C, so one op call scans the whole grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from handssca.ops import selective_scan

DIRECTIONS = 4


def cross_scan(x: Tensor) -> Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(y: Tensor, height: int, width: int) -> Tensor:
    """(B, 4, D, H*W) -> (B, D, H, W): each direction mapped back to its grid cell, summed."""
    batch, _, dim, _ = y.shape
    rows = y[:, 0] + y[:, 2].flip(-1)
    cols = y[:, 1] + y[:, 3].flip(-1)
    cols = cols.reshape(batch, dim, width, height).transpose(2, 3)
    return rows.reshape(batch, dim, height, width) + cols


class SS2D(nn.Module):
    """Channels-last (B, H, W, d_model) -> (B, H, W, d_model).

    Parameter layout follows VMamba (``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``,
    ``A_logs``, ``Ds``) so its checkpoints map by name. With d_model=256, expand=2, d_state=16
    this is 0.567M parameters.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        dt_rank: int | None = None,
        d_conv: int = 3,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        k, d, n, r = DIRECTIONS, self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv2d = nn.Conv2d(d, d, d_conv, padding=(d_conv - 1) // 2, groups=d, bias=True)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d))
        self.A_logs = nn.Parameter(torch.empty(k * d, n))
        self.Ds = nn.Parameter(torch.empty(k * d))
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, d_model, bias=False)
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's initialisation: S4D-real A, D = 1, dt spread log-uniformly in [dt_min, dt_max]."""
        dt_min, dt_max, floor = self._dt_range
        bound = self.d_inner**-0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        nn.init.uniform_(self.dt_projs_weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(
            torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        length = height * width
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (B, d, H, W)
        xs = cross_scan(x)  # (B, K, d, L)
        # Batched matmuls rather than einsum: ONNX Runtime runs MatMul much faster than Einsum.
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (K, c, d) @ (B, K, d, L) -> (B, K, c, L)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (K, d, r) @ (B, K, r, L) -> (B, K, d, L)
        y = selective_scan(
            xs.reshape(batch, -1, length),
            dts.reshape(batch, -1, length),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),
            Cs.contiguous(),
            self.Ds.float(),
            None,
            self.dt_projs_bias.float().reshape(-1),
            True,
        )
        y = cross_merge(y.reshape(batch, DIRECTIONS, self.d_inner, length), height, width)
        y = self.out_norm(y.permute(0, 2, 3, 1)) * F.silu(z)
        return self.out_proj(y)
