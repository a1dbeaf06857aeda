"""DistributedDataParallel training with two real processes (torchrun, gloo, CPU) against one
process with the same global batch: the same losses and weights, one writer, and checkpoints
that resume across the two."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY as TINY_FIELDS
from conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow  # two processes train with gloo

TINY = TINY_OVERRIDES


def train(root, out, batch, steps, processes=1, resume=None):
    # BatchNorm frozen: on the CPU each process would otherwise keep its own batch statistics
    # (SyncBatchNorm is CUDA-only), which no single process can equal.
    overrides = [f"data.root={root}", f"train.out={out}", f"train.batch_size={batch}", f"train.max_steps={steps}"]
    overrides += ["train.epochs=1", "train.log_every=1", "train.checkpoint_every=0", "train.freeze_bn=true"]
    overrides += ["data.val_samples=2", "data.occluders=0.0", "mano.model=builtin", *TINY]
    command = [sys.executable, "-m", "handssca.cli", "train"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command += ["-m", "handssca.cli", "train"]
    for item in overrides:
        command += ["--set", item]
    if resume:
        command += ["--resume", str(resume)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def losses(out):
    with open(out / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] == "train/loss"]
    return {int(r["step"]): float(r["value"]) for r in rows}, [int(r["step"]) for r in rows]


def weights(out):
    return torch.load(out / "last.pt", weights_only=True)["model"]


# Adam divides each gradient by its running RMS, so where gradients are tiny the rounding of a
# different summation order (two processes' gradients averaged) grows to about 1e-5 in a few
# steps; the heatmaps' spatial softmax makes every output invariant to this bias, so its
# gradient is rounding noise alone and its steps about lr. The outputs, which is what matters,
# are compared to 1e-6.
WEIGHT_ATOL = 5e-5
NOISE_ONLY = {"heatmap_head.score.bias": 1e-3}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=NOISE_ONLY.get(name, WEIGHT_ATOL), msg=name)
    from handssca.models import HandSSCA, HandSSCAConfig

    config = HandSSCAConfig(**TINY_FIELDS)
    nets = [HandSSCA(config).eval(), HandSSCA(config).eval()]
    for net, state in zip(nets, (a, b), strict=True):
        net.load_state_dict(state)
    image = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        first, second = nets[0](image), nets[1](image)
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def runs(small_synthetic_set, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    root = small_synthetic_set
    return {
        "single": train(root, folder / "single", batch=4, steps=3),
        "ddp": train(root, folder / "ddp", batch=2, steps=3, processes=2),
        "root": root,
        "folder": folder,
    }


def test_two_processes_train_like_one_with_the_same_global_batch(runs):
    single, ddp = losses(runs["single"]), losses(runs["ddp"])
    assert single[1] == ddp[1] == [1, 2, 3]  # rank 0 alone writes: every step once
    for step in (1, 2, 3):
        assert ddp[0][step] == pytest.approx(single[0][step], rel=1e-5), step
    assert_same_weights(weights(runs["ddp"]), weights(runs["single"]))
    written = sorted(p.name for p in runs["ddp"].iterdir())
    assert written == sorted(p.name for p in runs["single"].iterdir())  # nothing written twice or by rank 1
    events = list((runs["ddp"] / "tensorboard").iterdir())
    assert len(events) == 1


def test_a_ddp_checkpoint_resumes_in_one_process_and_back(runs):
    root, folder = runs["root"], runs["folder"]
    reference = train(root, folder / "single_on", batch=4, steps=5, resume=runs["single"] / "last.pt")
    from_ddp = train(root, folder / "from_ddp", batch=4, steps=5, resume=runs["ddp"] / "last.pt")
    back = train(root, folder / "back", batch=2, steps=5, processes=2, resume=runs["single"] / "last.pt")
    for out in (from_ddp, back):
        assert losses(out)[1] == [4, 5]
        assert_same_weights(weights(out), weights(reference))
