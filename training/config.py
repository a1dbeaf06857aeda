"""Training run configuration: defaults, a YAML file on top, then ``--set key.sub=value`` overrides.

Sections: ``model`` (HandSSCAConfig fields), ``data``, ``train``, ``loss`` (LossWeights) and
``mano``. The defaults are the paper's FreiHAND recipe: Adam at 1e-4, decay x0.1 every 10
epochs, batch 32, eq. 4's weights. Unknown keys are errors, so a typo never trains silently
with a default.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from handssca.errors import OptionError

DEFAULTS: dict[str, Any] = {
    "model": {},  # HandSSCAConfig fields; empty = the paper's model
    "data": {
        "dataset": "freihand",  # freihand | ho3d | dexycb (a synthetic set is read as freihand)
        "root": None,
        "train_split": None,  # default per data set: training | train | train
        "val_split": None,  # default per data set: evaluation | evaluation | test
        "versions": [0, 1, 2, 3],  # FreiHAND background versions
        "ho3d_version": "v2",
        "val_samples": 0,  # 0: the whole validation split
        "augment": True,
        "occluders": 0.0,  # probability of synthetic occluders per training sample
        "workers": 0,
    },
    "train": {
        "epochs": 50,
        "batch_size": 32,
        "lr": 1e-4,
        "lr_step_epochs": 10,
        "lr_gamma": 0.1,
        "seed": 0,
        "amp": True,  # mixed precision, on CUDA only
        "device": "auto",  # auto | cpu | cuda
        "max_steps": 0,  # stop after this many optimisation steps (0: run all epochs)
        "checkpoint_every": 500,  # steps between checkpoints (and one at every epoch end)
        "validate_every": 1,  # epochs
        "log_every": 10,  # steps between CSV/TensorBoard rows
        "imagenet_weights": None,  # torchvision resnet50-*.pth for the backbone
        # BatchNorm on its running statistics, not updated: for small per-process batches, and
        # for DDP on the CPU, where SyncBatchNorm cannot run (on CUDA, DDP syncs BatchNorm).
        "freeze_bn": False,
        "out": "runs/handssca",
    },
    "loss": {"theta": 10.0, "beta": 0.1, "joints_2d": 1e2, "joints_3d": 1e4, "vertices": 1e4, "rotation": "axis_angle"},
    "mano": {
        "model": "builtin",  # builtin (the stand-in hand, NOT MANO) or a MANO_RIGHT.pkl / .npz path
        "fingertips": "smplx",  # fingertip vertex convention of a MANO file
    },
}


def short(value, limit: int = 80) -> str:
    """``repr(value)`` of about ``limit`` characters at most (long strings and lists elided): a
    refusal names a value, never prints a huge one whole."""
    import reprlib

    shortened = reprlib.Repr()
    shortened.maxstring = shortened.maxother = limit
    shortened.maxlist = shortened.maxdict = shortened.maxtuple = 8
    return cut(shortened.repr(value), limit)


def cut(text: str, limit: int = 80) -> str:
    """``text``, cut to ``limit`` characters with '...' when longer."""
    return text if len(text) <= limit else text[:limit] + "..."


@functools.cache
def _yaml():
    """PyYAML (imported on first use: the runtime's commands need no YAML) with a SafeLoader that
    refuses aliases: ``*name`` raises as it is composed, before anything is built. A kilobyte of
    nested anchors and aliases ("billion laughs") expands to gigabytes in whatever walks it (a
    comparison, a message, a deepcopy); a config never needs one."""
    import yaml

    class AliasRefused(yaml.YAMLError):
        def __init__(self, anchor: str, line: int):
            super().__init__(f"alias *{anchor} on line {line}")
            self.anchor, self.line = anchor, line

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise AliasRefused(event.anchor, event.start_mark.line + 1)
            return super().compose_node(parent, index)

    return yaml, AliasRefused, NoAliasLoader


def safe_yaml_load(text: str, where: str, error=None, option: bool = False):
    """``text`` as YAML (safe types only, no aliases); ``error`` (default OptionError) naming
    ``where`` (a file and the line, or with ``option`` a command-line value) when it is not valid
    YAML or uses an alias."""
    error = error or OptionError
    yaml, AliasRefused, NoAliasLoader = _yaml()
    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except AliasRefused as exc:
        line = "" if option else f" line {exc.line}:"
        raise error(
            f"{where}:{line} YAML aliases (*{cut(exc.anchor, 40)}) are refused (they can expand without bound); "
            "write the value out"
        ) from exc
    except yaml.YAMLError as exc:
        what = "the value is not valid YAML" if option else "not valid YAML"
        raise error(f"{where}: {what} ({cut(str(exc).splitlines()[0], 160)})") from exc


# The smallest value each number may take (a step count of 0 divides by zero; a batch of 0 has
# nothing to train on), and the choices of the fields that have few.
MINIMUM = {
    "data.val_samples": 0, "data.workers": 0, "data.occluders": 0,
    "train.epochs": 1, "train.batch_size": 1, "train.lr": 0, "train.lr_step_epochs": 1, "train.lr_gamma": 0,
    "train.max_steps": 0, "train.checkpoint_every": 0, "train.validate_every": 1, "train.log_every": 1,
}  # fmt: skip
CHOICES = {
    "data.dataset": ("freihand", "ho3d", "dexycb"),
    "data.ho3d_version": ("v2", "v3"),
    "train.device": ("auto", "cpu", "cuda"),
    "loss.rotation": ("axis_angle", "matrix"),
}


def check_values(config: dict) -> dict:
    """Each number at or above its MINIMUM, each choice among CHOICES, FreiHAND versions among
    0-3: OptionError naming the key otherwise, before any training starts."""
    for dotted, minimum in MINIMUM.items():
        section, key = dotted.split(".")
        value = config[section][key]
        if value is not None and value < minimum:
            raise OptionError(f"{dotted} = {short(value)}: must be at least {minimum}")
    for dotted, choices in CHOICES.items():
        section, key = dotted.split(".")
        if config[section][key] not in choices:
            raise OptionError(f"{dotted} = {short(config[section][key])}: expected one of {', '.join(choices)}")
    versions = config["data"]["versions"]
    if not versions or any(v not in (0, 1, 2, 3) for v in versions):
        raise OptionError(f"data.versions = {short(versions)}: expected FreiHAND background versions among 0, 1, 2, 3")
    return config


def _merge(base: dict, update: dict, where: str) -> dict:
    for key, value in update.items():
        if key not in base:
            raise OptionError(f"{where}: unknown key {short(key)} (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise OptionError(f"{where}: '{key}' must be a mapping")
            if key == "model":  # HandSSCAConfig checks these names itself
                base[key] = {**base[key], **value}
            else:
                _merge(base[key], value, f"{where}.{key}")
        else:
            _check_type(base[key], value, f"{where}: '{key}'")
            base[key] = value
    return base


def _check_type(default, value, where: str) -> None:
    """A value of the kind its default has (a number for a number, a list for a list ...), so that a
    typo is refused here in one line rather than failing as a TypeError deep in training."""
    if default is None or value is None:
        return
    number = (int, float)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, number):
        ok = isinstance(value, number) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = "a number" if isinstance(default, number) and not isinstance(default, bool) else type(default).__name__
        raise OptionError(f"{where} must be {kind} (like its default {default!r}), got {short(value)}")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; OptionError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{path}: config file not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise OptionError(f"{path}: not a text file (not UTF-8), so not a YAML config") from exc
    data = safe_yaml_load(text, str(path)) or {}
    if not isinstance(data, dict):
        raise OptionError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """DEFAULTS, then the YAML file, then ``section.key=value`` overrides (values parsed as YAML)."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge(config, read_yaml_mapping(path), str(path))
    for item in overrides or []:
        if "=" not in item:
            raise OptionError(f"--set {cut(item)}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        value = safe_yaml_load(raw, f"--set {cut(item)}", option=True) if raw.strip() else None
        update: dict = value
        for key in reversed(keys):
            update = {key: update}
        _merge(config, update, f"--set {cut(dotted)}")
    return check_values(config)


def load_model_config(path: str | Path | None, overrides: dict):
    """A HandSSCAConfig from a YAML file's ``model:`` section (or its top level), then the
    overrides that are not None; OptionError naming the file for an unknown or bad field."""
    from handssca.models import HandSSCAConfig

    values: dict = {}
    if path:
        data = read_yaml_mapping(path)
        values = data.get("model", data)
        if not isinstance(values, dict):
            raise OptionError(f"{path}: 'model' must be a mapping of HandSSCAConfig fields, got {short(values)}")
        values = dict(values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return HandSSCAConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{path or 'model config'}: {cut(' '.join(str(exc).split()), 200)}") from exc
