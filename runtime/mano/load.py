"""The hand model a command's ``--mano`` names: a MANO .pkl/.npz file, or the built-in stand-in.
Every command and the data loaders take their hand model from ``load_hand_model``."""

from __future__ import annotations

from pathlib import Path

from handssca.runtime.mano.builtin import STAND_IN_NOTE, build_builtin_hand
from handssca.runtime.mano.files import load_mano
from handssca.runtime.mano.model import FINGERTIP_IDS, ManoModel

BUILTIN = "builtin"  # --mano's name for the stand-in hand


def load_hand_model(source: str | Path | None, fingertips: str = "smplx") -> tuple[ManoModel, tuple[int, ...], str]:
    """(model, fingertip ids, label) for a command's ``--mano``: a MANO .pkl/.npz path, or
    None / "builtin" for the stand-in hand. Raises InputError for a bad file."""
    if source is None or str(source) == BUILTIN:
        model, fingertip_ids = build_builtin_hand()
        return model, fingertip_ids, STAND_IN_NOTE
    model = load_mano(source)
    return model, model.fingertip_ids or FINGERTIP_IDS[fingertips], model.note or Path(source).name
