"""The training loop: data, model, MANO, the paper's loss, checkpoints that resume exactly.

One process trains on the CPU or one GPU; ``torchrun --nproc_per_node=N -m handssca train ...``
trains with torch's DistributedDataParallel (rank 0 writes checkpoints and logs). Every random
choice is a function of (seed, epoch, index) or restored from the checkpoint, and a resumed run
skips the batches its epoch had already done, so resuming gives the same weights as never
stopping. Checkpoints (``last.pt`` every ``checkpoint_every`` steps and at every epoch end,
``best.pt`` by validation PA-MPJPE) are written atomically: a killed run loses only the steps
since the last one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from handssca.errors import ModelFileError, OutputError, RunError
from handssca.models import HandSSCA, HandSSCAConfig
from handssca.models.mano import MANOLayer
from handssca.runtime.files import check_writable, write_atomically

from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .datasets import DEFAULT_SPLITS, load_mano_model, open_dataset
from .losses import LossWeights, hand_loss

# What a run leaves in train.out; a folder holding any of them is that run's, not a new one's.
RUN_FILES = ("last.pt", "best.pt", "log.csv", "config.json")
LOG_HEADER = ["step", "epoch", "lr", "name", "value"]


def mano_layer(model, fingertip_ids) -> MANOLayer:
    """The MANO layer the network is trained with: right hand, axis-angle relative to the mean hand."""
    return MANOLayer(
        model, side="right", pose_space="axis_angle", flat_hand_mean=False, fingertip_ids=fingertip_ids, units="m"
    )


class _Subset:
    def __init__(self, records, count):
        self.records, self.count = records, min(count, len(records))

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        return self.records[i]


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of a permutation fixed by (seed, epoch), from batch ``skip`` on.

    The share is every ``world``-th index from ``rank`` on, so that batch k of all the ranks
    together is batch k of one process with ``world`` times the batch: the same samples at
    the same step, whatever the number of processes."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def _indices(self) -> list[int]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        per_rank = self.size // self.world  # equal shares keep DDP ranks in step
        mine = order[: per_rank * self.world][self.rank :: self.world].tolist()
        return mine[self.skip * self.batch_size :]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self):
        return len(self._indices())


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _end_distributed() -> None:
    """Destroys the process group once every rank has finished its run. Left to interpreter exit,
    gloo's worker threads can abort a rank ("terminate called without an active exception",
    pytorch/pytorch#190489; seen once here in the two-process test). Only after success: with
    another rank still inside a collective it would wait forever (pytorch/torchtitan#1342)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


class Trainer:
    """``Trainer(config).fit()`` -> the final validation metrics (or {})."""

    def __init__(self, config: dict[str, Any], resume: str | Path | None = None, show_progress: bool = True):
        from .samples import Augmentation, HandCrops

        self.config = config
        train = config["train"]
        self.rank, self.world, local_rank = _distributed()
        want = train["device"]  # auto, cpu or cuda (load_config checked it)
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise RunError("train.device is cuda but no CUDA GPU is available")
        self.device = torch.device(f"cuda:{local_rank}" if want == "cuda" else "cpu")
        self.amp = bool(train["amp"]) and self.device.type == "cuda"
        self.out = Path(train["out"])
        held = [name for name in RUN_FILES if (self.out / name).exists()]
        if held and not resume and not (self.out / "last.pt").exists():
            raise RunError(
                f"{self.out}: holds the start of a run that stopped before its first checkpoint ({', '.join(held)}): "
                "there is nothing to resume; delete those files, or train into a new folder (--set train.out=...)"
            )
        if held and not resume:
            # Training on would replace last.pt and config.json and mix two runs in one log.
            raise RunError(
                f"{self.out}: holds a run already ({', '.join(held)}): continue it with --resume "
                f"{self.out / 'last.pt'} (or --auto-resume), or train into a new folder (--set train.out=...)"
            )
        if self.rank == 0:
            check_writable(self.out / "config.json")  # a read-only folder or a file in the way: one line, first
        self.show_progress = show_progress and self.rank == 0
        torch.manual_seed(train["seed"])

        mano, fingertip_ids, self.mano_note = load_mano_model(config)
        self.mano = mano_layer(mano, fingertip_ids).to(self.device)
        try:
            model_config = HandSSCAConfig.from_dict(dict(config["model"]))
        except (TypeError, ValueError) as exc:
            raise RunError(f"model: {exc}") from exc
        self.model = HandSSCA(model_config, imagenet_weights=train["imagenet_weights"]).to(self.device)
        try:
            self.weights = LossWeights(**config["loss"])
        except (TypeError, ValueError) as exc:
            raise RunError(f"loss config: {exc}") from exc

        data = config["data"]
        train_split, val_split = DEFAULT_SPLITS.get(data["dataset"], (None, None))
        train_split = data["train_split"] or train_split
        val_split = data["val_split"] or val_split
        size = model_config.input_size
        augment = Augmentation(occluders=data["occluders"]) if data["augment"] else None
        self.train_set = HandCrops(
            open_dataset(config, train_split, mano), size=size, augment=augment, seed=train["seed"]
        )
        self.val_set = None
        if val_split:
            records = open_dataset(config, val_split, mano)
            if data["val_samples"]:
                records = _Subset(records, data["val_samples"])
            self.val_set = HandCrops(records, size=size, augment=None, seed=train["seed"])
        batch = train["batch_size"]
        if len(self.train_set) < batch * self.world:
            raise RunError(
                f"the training split has {len(self.train_set)} samples, fewer than one batch of {batch} per process"
            )
        self.sampler = EpochSampler(len(self.train_set), batch, train["seed"], self.rank, self.world)
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=batch,
            sampler=self.sampler,
            num_workers=data["workers"],
            collate_fn=_collate,
            drop_last=True,
            persistent_workers=False,
        )
        self.steps_per_epoch = len(self.sampler) // batch

        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train["lr"])
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=train["lr_step_epochs"], gamma=train["lr_gamma"]
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch, self.epoch_step, self.global_step = 0, 0, 0
        self.best = math.inf
        self.history: list[dict] = []
        self.resumed_step: int | None = None
        if resume:
            self._resume(Path(resume))
            self.resumed_step = self.global_step
        self.net = self.model
        if self.world > 1:
            if self.device.type == "cuda" and not train["freeze_bn"]:
                # One set of BatchNorm statistics over the global batch, as one process would have.
                self.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    # -- checkpoints ---------------------------------------------------------------------------

    def _training_state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch_step": self.epoch_step,
            "best": self.best if math.isfinite(self.best) else None,
            "config": self.config,
        }

    def save(self, name: str, metrics: dict | None = None) -> Path | None:
        if self.rank != 0:
            return None
        return save_checkpoint(
            self.out / name,
            self.model,
            epoch=self.epoch,
            step=self.global_step,
            metrics={k: v for k, v in (metrics or {}).items() if isinstance(v, int | float) and v is not None},
            training=self._training_state(),
        )

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        training = state.get("training")
        if training is None:
            raise ModelFileError(f"{path}: holds weights only (no optimizer state): it cannot resume a run")
        if state["model_config"] != self.model.config.to_dict():
            raise ModelFileError(f"{path}: written for another model config; resume with the run's own config")
        load_weights(self.model, state["model"], path)
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.scaler.load_state_dict(training["scaler"])
        torch.set_rng_state(training["torch_rng"].cpu())
        self.epoch, self.global_step, self.epoch_step = state["epoch"], state["step"], training["epoch_step"]
        self.best = training["best"] if training["best"] is not None else math.inf

    # -- steps ---------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.net.train()
        if self.config["train"]["freeze_bn"]:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            outputs = self.net(batch["image"])
        vertices, joints = self.mano(outputs["pose"].float(), outputs["shape"].float())
        root = joints[:, :1]
        loss, terms = hand_loss(outputs, (vertices - root, joints - root), batch, self.weights)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        row = {"loss": float(loss.detach()), **terms}
        if self.world > 1:  # the log shows the global batch's losses, as one process would
            import torch.distributed as dist

            values = torch.tensor(list(row.values()), dtype=torch.float64)
            dist.all_reduce(values)
            row = dict(zip(row, (values / self.world).tolist(), strict=True))
        return row

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Root-relative (joints (B,21,3), vertices (B,778,3)) in metres for normalised crops."""
        self.model.eval()
        outputs = self.model(images.to(self.device))
        vertices, joints = self.mano(outputs["pose"].float(), outputs["shape"].float())
        root = joints[:, :1]
        return (joints - root).cpu().numpy(), (vertices - root).cpu().numpy()

    def validate(self) -> dict:
        """The validation split's official metrics, through the same evaluation as ``handssca eval``."""
        from .evaluate import evaluate

        def predict(images: np.ndarray):
            with torch.inference_mode():
                return self.predict(torch.from_numpy(images))

        batch = self.config["train"]["batch_size"]
        return evaluate({"model": predict}, self.val_set, batch_size=batch, progress=False)["model"]

    # -- the loop ------------------------------------------------------------------------------

    def fit(self) -> dict:
        from tqdm import tqdm

        train = self.config["train"]
        if self.rank == 0:
            write_atomically(self.out / "config.json", json.dumps(self.config, indent=2, default=str).encode())
        log = _Log(self.out, enabled=self.rank == 0, resumed_step=self.resumed_step)
        max_steps = train["max_steps"] or math.inf
        final: dict = {}
        try:
            if self.global_step == 0 and self.val_set is not None and self.rank == 0:
                # The untrained score, so the log shows what training gained; the RNG is restored
                # so that validating does not change the run.
                rng = torch.get_rng_state()
                log.validation(0, 0, self.validate())
                torch.set_rng_state(rng)
            while self.epoch < train["epochs"] and self.global_step < max_steps:
                self.sampler.set_epoch(self.epoch, self.epoch_step)
                self.train_set.set_epoch(self.epoch)
                bar = tqdm(
                    self.loader,
                    total=self.steps_per_epoch - self.epoch_step,
                    desc=f"epoch {self.epoch + 1}/{train['epochs']}",
                    unit="batch",
                    disable=not self.show_progress,
                )
                started, done = time.perf_counter(), 0  # this run's batches, not a resumed epoch's earlier ones
                for batch in bar:
                    row = self.train_step(batch)
                    self.epoch_step += 1
                    self.global_step += 1
                    done += 1
                    rate = done * train["batch_size"] / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{rate:.1f}")
                    if self.global_step % train["log_every"] == 0 or self.global_step == 1:
                        log.write(self.global_step, self.epoch, self.optimizer.param_groups[0]["lr"], row)
                    self.history.append(row)
                    if train["checkpoint_every"] and self.global_step % train["checkpoint_every"] == 0:
                        self.save("last.pt")
                    if self.global_step >= max_steps:
                        break
                bar.close()
                if self.epoch_step < self.steps_per_epoch:  # stopped by max_steps mid-epoch
                    self.save("last.pt")
                    break
                self.epoch += 1
                self.epoch_step = 0
                self.scheduler.step()
                metrics = {}
                if self.val_set is not None and self.epoch % train["validate_every"] == 0:
                    metrics = self.validate()
                    final = metrics
                    log.validation(self.global_step, self.epoch, metrics)
                    score = metrics.get("pa_mpjpe_mm")
                    if score is not None and score < self.best:
                        self.best = score
                        self.save("best.pt", metrics)
                self.save("last.pt", metrics)
        finally:
            log.close()
        return final


class _Log:
    """CSV rows (always) and TensorBoard scalars (when tensorboard is installed). A resumed run
    first drops what the interrupted one logged after its checkpoint, so no step is logged twice.
    A write that fails (a full disk, a folder gone read-only) is OutputError naming the file."""

    def __init__(self, out: Path, enabled: bool, resumed_step: int | None = None):
        self.enabled = enabled
        self.file = self.writer = self.tensorboard = None
        self.path, self.events = out / "log.csv", out / "tensorboard"
        if not enabled:
            return
        with self._writing(self.path):
            if resumed_step is not None and self.path.exists():
                _truncate_log(self.path, resumed_step)
            new = not self.path.exists()
            self.file = open(self.path, "a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(LOG_HEADER)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional; the CSV has everything
            return
        with self._writing(self.events):
            # purge_step: TensorBoard hides the events at or after it that an earlier writer left.
            purge = None if resumed_step is None else resumed_step + 1
            self.tensorboard = SummaryWriter(str(self.events), purge_step=purge)

    @staticmethod
    @contextlib.contextmanager
    def _writing(path: Path):
        try:
            yield
        except OSError as exc:
            raise OutputError(f"{path}: cannot write it ({exc.strerror or exc})") from exc

    def _rows(self, step: int, epoch: int, lr, prefix: str, values: dict) -> None:
        if not self.enabled:
            return
        with self._writing(self.path):
            for name, value in values.items():
                self.writer.writerow([step, epoch, lr, f"{prefix}/{name}", value])
            self.file.flush()
        if self.tensorboard:
            with self._writing(self.events):
                for name, value in values.items():
                    self.tensorboard.add_scalar(f"{prefix}/{name}", value, step)

    def write(self, step: int, epoch: int, lr: float, row: dict) -> None:
        self._rows(step, epoch, lr, "train", row)

    def validation(self, step: int, epoch: int, metrics: dict) -> None:
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
        self._rows(step, epoch, "", "val", numbers)

    def close(self) -> None:
        if self.file:
            with self._writing(self.path):
                self.file.close()
        if self.tensorboard:
            with self._writing(self.events):
                self.tensorboard.close()


def _truncate_log(path: Path, step: int) -> None:
    """Keeps log.csv's rows up to ``step`` (the checkpoint a run resumes from), atomically."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    text = io.StringIO()
    csv.writer(text).writerows(kept)
    write_atomically(path, text.getvalue().encode())


def train(config_path, overrides=(), resume=None, auto_resume: bool = False) -> list[str]:
    """``handssca train``: a run from a YAML config and ``section.key=value`` overrides, resumed
    from ``resume`` (or from the run folder's last.pt with ``auto_resume``); the lines to show."""
    from .config import load_config

    config = load_config(config_path, list(overrides))
    out = Path(config["train"]["out"])
    if resume is None and auto_resume and (out / "last.pt").is_file():
        resume = str(out / "last.pt")
    trainer = Trainer(config, resume=resume)
    print(f"MANO: {trainer.mano_note}; device {trainer.device}; {len(trainer.train_set)} training samples")
    metrics = trainer.fit()
    _end_distributed()
    best = ", best.pt" if (out / "best.pt").exists() else ""
    lines = [f"checkpoints in {out} (last.pt{best}); log {out / 'log.csv'}"]
    if metrics:
        lines.append("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return lines
