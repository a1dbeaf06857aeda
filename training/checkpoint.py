"""HandSSCA checkpoints: what training writes and export, evaluation and the demo read.

A checkpoint is a ``torch.save`` dict readable with ``torch.load(weights_only=True)`` (tensors,
numbers, strings, lists and dicts only), so loading one never runs code:

    format       "handssca-checkpoint/1"
    model        the network's state_dict
    model_config HandSSCAConfig.to_dict()
    epoch, step  progress when it was written
    metrics      {name: float}, e.g. validation PA-MPJPE
    training     optimizer/scheduler state, RNG states, the run's config (absent in weight-only files)

Writes are atomic: a killed process leaves the previous file intact.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from handssca import __version__
from handssca.errors import ModelFileError
from handssca.models import HandSSCA, HandSSCAConfig
from handssca.runtime.files import write_atomically

FORMAT = "handssca-checkpoint/1"


def save_checkpoint(
    path: str | Path,
    model: HandSSCA,
    *,
    epoch: int = 0,
    step: int = 0,
    metrics: dict[str, float] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    path = Path(path)
    state = {
        "format": FORMAT,
        "handssca_version": __version__,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "epoch": int(epoch),
        "step": int(step),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    if training is not None:
        state["training"] = training
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, checked for format and completeness; ModelFileError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: truncated or not a PyTorch checkpoint (not a complete zip archive, which torch.save writes)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but plain data: this file holds code or foreign objects.
        # Name what was found; torch's own text suggests turning the safety off, which we never do.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a reference to {found.group(1)}" if found else "objects other than tensors and plain data"
        raise ModelFileError(
            f"{path}: refused to load: it holds {what}, which a HandSSCA checkpoint never does (it may run code)"
        ) from exc
    except Exception as exc:  # torch.load on foreign bytes raises almost any exception type
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path}: truncated or not a PyTorch checkpoint ({detail})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ModelFileError(f"{path}: not a HandSSCA checkpoint (format {found!r}, expected {FORMAT!r})")
    for key in ("model", "model_config"):
        if key not in state:
            raise ModelFileError(f"{path}: incomplete checkpoint, '{key}' is missing")
    return state


def model_from_checkpoint(path: str | Path, state: dict[str, Any] | None = None) -> HandSSCA:
    """The network a checkpoint describes, with its weights loaded (in eval mode)."""
    path = Path(path)
    state = state if state is not None else load_checkpoint(path)
    try:
        config = HandSSCAConfig.from_dict(state["model_config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad model_config ({exc})") from exc
    model = HandSSCA(config)
    load_weights(model, state["model"], path)
    return model.eval()


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """load_state_dict with a one-line error naming the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (e.g. {k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise ModelFileError(f"{path}: weights do not fit the model: {'; '.join(parts)}")
    # A diverged run saves NaN/inf weights: said here, not as a disagreement between backends later.
    broken = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ModelFileError(
            f"{path}: {len(broken)} weight tensors are not finite (NaN or inf; e.g. {broken[0]}): "
            "the training run diverged, use an earlier checkpoint"
        )
    model.load_state_dict(weights)


def save_weights_only(source: str | Path, destination: str | Path) -> dict[str, Any]:
    """Copies a checkpoint without its training state (optimizer, RNG, config): the file to ship
    or export from. Returns the written dict (model, config, epoch, step, metrics)."""
    source, destination = Path(source), Path(destination)
    if destination.exists() and source.exists() and destination.resolve() == source.resolve():
        raise ModelFileError(
            f"{destination}: is the checkpoint being slimmed; slimming it in place would drop the training state "
            "that --resume needs: write to another file"
        )
    state = load_checkpoint(source)
    state.pop("training", None)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(Path(destination), buffer.getvalue())
    return state


def slim_checkpoint(source: str | Path, destination: str | Path) -> str:
    """``handssca checkpoint slim``: ``save_weights_only`` and the line that reports it."""
    state = save_weights_only(source, destination)
    size = Path(destination).stat().st_size / 1e6
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in state["metrics"].items())
    return f"wrote {destination} ({size:.1f} MB; epoch {state['epoch']}{'; ' + metrics if metrics else ''})"


def load_network(checkpoint=None, config=None, overrides: dict | None = None, seed: int = 0):
    """(network in eval mode, description of its weights): the checkpoint's, or an untrained one
    with ``seed`` from ``config`` (a HandSSCAConfig, or a YAML file's path; None: the paper's)
    and ``overrides`` (said plainly, for trying the pipeline)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if checkpoint:
        if config is not None or overrides:
            raise ModelFileError(
                f"{checkpoint}: --checkpoint fixes the model; drop --config, --attention and --input-size"
            )
        return model_from_checkpoint(checkpoint), f"checkpoint {Path(checkpoint).name}"
    if not isinstance(config, HandSSCAConfig):
        from .config import load_model_config

        config = load_model_config(config, overrides)
    torch.manual_seed(seed)
    return HandSSCA(config).eval(), f"untrained (seed {seed})"
