"""The CLI types no default of its own: every option's default is its owner's (an options
dataclass or the function that does the work), and every handler reaches a real owner."""

from __future__ import annotations

import argparse

import pytest

from handssca.cli import build_parser
from handssca.dispatch import OWNERS, actions, adopt_defaults, owner_defaults, resolve, subcommands

# Options whose default says "not given" rather than a value.
UNSET = (None, False, [], argparse.SUPPRESS)


def every_subparser(parser, path=()):
    for name, sub in subcommands(parser).items():
        yield (*path, name), sub
        yield from every_subparser(sub, (*path, name))


def leaf_commands():
    return [(" ".join(path), sub) for path, sub in every_subparser(build_parser()) if not subcommands(sub)]


@pytest.mark.parametrize(("command", "parser"), leaf_commands(), ids=[c for c, _ in leaf_commands()])
def test_every_default_is_the_owners(command, parser):
    owners = getattr(parser, OWNERS, ())
    defaults = {}
    for owner in owners:
        defaults |= owner_defaults(resolve(owner))
    adopt_defaults(parser)
    for action in actions(parser):
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        flag = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._StoreTrueAction):
            assert action.default is False, f"{command} {flag}: a flag must default to off"
        if isinstance(action, argparse._StoreFalseAction):
            assert defaults.get(action.dest) is True, f"{command} {flag}: its owner must default to on"
        if action.default in UNSET or action.dest in ("handler", "commands"):
            continue
        assert action.dest in defaults, f"{command} {flag}: default {action.default!r} typed in the CLI, not owned"
        assert action.default == defaults[action.dest], f"{command} {flag}"


def test_a_default_typed_in_the_cli_is_caught():
    parser = argparse.ArgumentParser()
    setattr(parser, OWNERS, ("handssca.training.synthetic:SynthOptions",))
    parser.add_argument("--train", type=int)
    parser.add_argument("--frames", type=int, default=3)
    adopt_defaults(parser)
    owned = owner_defaults(resolve("handssca.training.synthetic:SynthOptions"))
    assert parser.get_default("train") == owned["train"]
    assert parser.get_default("frames") == 3 and "frames" not in owned  # what the test above refuses


def test_the_synthetic_set_default_is_the_owners():
    from handssca.training.synthetic import SynthOptions

    parser = dict(every_subparser(build_parser()))[("data", "synth")]
    adopt_defaults(parser)
    assert parser.get_default("train") == SynthOptions().train


def owner_names(owner) -> set[str]:
    """The fields of a dataclass, or the parameters of a function, an option can reach."""
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(owner):
        return {f.name for f in dataclasses.fields(owner) if f.init}
    return set(inspect.signature(owner).parameters)


@pytest.mark.parametrize(("command", "parser"), leaf_commands(), ids=[c for c, _ in leaf_commands()])
def test_every_option_reaches_an_owner(command, parser):
    """An option whose dest matches none of its command's owners would be parsed and then
    silently dropped: each must be a field or parameter of an owner, or read by the command's
    own handler (info, doctor, webcam, infer, serve check read some themselves)."""
    import inspect

    from handssca import cli

    handler = parser.get_default("handler")
    reachable = set().union(*(owner_names(resolve(owner)) for owner in getattr(parser, OWNERS, ())))
    source = "" if hasattr(handler, "owners") and handler.__name__ == "handler" else inspect.getsource(handler)
    source += inspect.getsource(cli.predictor_for) if "predictor_for" in source else ""
    for action in actions(parser):
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        flag = "/".join(action.option_strings) or action.dest
        assert action.dest in reachable or f"args.{action.dest}" in source, f"{command} {flag}: reaches no owner"


def test_an_option_that_reaches_no_owner_is_caught():
    from handssca.dispatch import call

    parser = argparse.ArgumentParser()
    handler = call("handssca.training.synthetic:synthesize", options="handssca.training.synthetic:SynthOptions")
    parser.set_defaults(handler=handler)
    setattr(parser, OWNERS, handler.owners)
    parser.add_argument("--trian", type=int)  # a typo of --train
    with pytest.raises(AssertionError, match="--trian: reaches no owner"):
        test_every_option_reaches_an_owner("data synth", parser)
