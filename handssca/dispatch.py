"""How a parsed command reaches the layer that owns its work (``handssca.cli`` parses).

Each subcommand names its owners: the function that does the work and the options dataclasses
it takes. An option named like one of their fields takes that field's default
(``adopt_defaults``), so no default is typed twice; ``call`` makes the handler that builds the
dataclasses from the parsed options, calls the owner and prints what it returns. Owners are
imported only for the subcommand being run, so commands that need no torch run without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
from pathlib import Path

from handssca.errors import MissingBackend


class OwnerDefaultsFormatter(argparse.HelpFormatter):
    """--help shows each option's default where it has one (the owner's), not "None" or "False"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.default not in (None, False, [], argparse.SUPPRESS)
            and action.option_strings
            and action.nargs != 0  # a flag's default is its absence (--no-smooth: smoothing on)
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


OWNERS = "owners"  # the attribute of a subparser that names its owners ("module:attribute")


def require_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingBackend(
            f"'handssca {command}' needs PyTorch: pip install 'handssca[train]' (torch==2.13.0 for the CPU build)"
        ) from exc


def resolve(owner: str):
    module, _, name = owner.partition(":")
    return getattr(importlib.import_module(module), name)


def owner_defaults(owner) -> dict:
    """The defaults of a dataclass's fields, or of a function's keyword parameters."""
    if dataclasses.is_dataclass(owner):
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(owner)
            if f.init and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
        }
    parameters = inspect.signature(owner).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """A parser's actions (its options, positionals and subcommand groups): the one place
    argparse's private attributes are read."""
    return list(parser._actions)


def collects(action: argparse.Action) -> bool:
    """Whether ``action`` collects its values into a list (--onnx X --onnx Y)."""
    return isinstance(action, argparse._AppendAction)


def adopt_defaults(parser: argparse.ArgumentParser) -> None:
    """Each option of ``parser`` named like a field of its owners takes that field's default
    (options that collect values, --onnx X --onnx Y, start from a list of the owner's)."""
    defaults = {}
    for owner in getattr(parser, OWNERS, ()):
        try:
            defaults.update(owner_defaults(resolve(owner)))
        except ImportError:  # torch missing: the handler says so in one line
            return
    for action in actions(parser):
        if action.dest in defaults:
            value = defaults[action.dest]
            # argparse appends to a copy of the default, which must be a list
            action.default = list(value) if collects(action) else value


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next((a for a in actions(parser) if isinstance(a, argparse._SubParsersAction)), None)
    return dict(action.choices) if action else {}


def chosen_parsers(parser: argparse.ArgumentParser, argv: list[str]) -> list[argparse.ArgumentParser]:
    """The subparsers ``argv`` names, outermost first."""
    chain = []
    for token in argv:
        if token.startswith("-"):
            continue
        choices = subcommands(chain[-1] if chain else parser)
        if token not in choices:
            break
        chain.append(choices[token])
    return chain


def fields_of(owner, args: argparse.Namespace, **values):
    """``owner`` (a dataclass) built from the options named like its fields, plus ``values``."""
    names = {f.name for f in dataclasses.fields(owner) if f.init}
    return owner(**{n: getattr(args, n) for n in names if hasattr(args, n)} | values)


def arguments_of(function, args: argparse.Namespace, *skip: str) -> dict:
    """The options named like ``function``'s parameters (but ``skip``), as keyword arguments."""
    names = set(inspect.signature(function).parameters) - set(skip)
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def show(result) -> int:
    """Prints what an owner returned: a line, lines, or a report with ``lines()``."""
    if hasattr(result, "lines"):
        result = result.lines()
    print("\n".join([str(result)] if isinstance(result, (str, Path)) else result))
    return 0


def call(target: str, *, needs_torch: str | None = None, say=None, start: str | None = None, **option_classes: str):
    """The handler that calls the owner ``target`` ("module:function") with the options named
    like its parameters, each of ``option_classes`` (parameter: "module:dataclass") built from
    the options named like its fields, and prints what it returns (through ``say``, given).
    ``needs_torch``: the command's name when it needs PyTorch; ``start``: a line said before
    anything is loaded (a command whose first step takes seconds)."""

    def handler(args):
        if start and (not needs_torch or importlib.util.find_spec("torch") is not None):
            from handssca.progress import say as announce  # without torch the next line is the error alone

            announce(start)
        if needs_torch:
            require_torch(needs_torch)
        function = resolve(target)
        values = arguments_of(function, args, *option_classes)
        values |= {name: fields_of(resolve(owner), args) for name, owner in option_classes.items()}
        result = function(**values)
        return show(say(result) if say else result)

    handler.owners = (target, *option_classes.values())
    return handler
