"""The project's errors: one root and a handful of kinds, each named by what the user must do.

Every failure a user can cause or fix is a ``HandSSCAError`` whose message is one line naming the
file or option and the problem; the ``handssca`` command prints it and exits with its kind's
status (2 for an option, as argparse's own usage errors; 1 for the rest). Anything else that
escapes is a bug and keeps its traceback. The kinds keep the built-in base callers catch
(``ValueError``, ``RuntimeError``, ``OSError``). docs/faults.md lists them.
"""


class HandSSCAError(Exception):
    """A user-facing failure: one line naming the file or option and the problem."""

    exit_status = 1


class OptionError(HandSSCAError, ValueError):
    """Fix the option: a command-line option, a config value or an argument out of its range or
    not among its choices, or options that do not go together."""

    exit_status = 2


class InputError(HandSSCAError, ValueError):
    """Fix the input: a file or frame that is missing, damaged, unsafe or of the wrong content (an
    image, a data set's file, a MANO file, a frame given to the predictor)."""


class UnreadableImage(InputError):
    """An image that is missing, truncated, too large or not decodable; loaders catch it to count
    the sample out and name it."""


class UnusableSample(InputError):
    """A data set sample that cannot be used; the trainer and evaluation catch it to count it out.
    ``unannotated``: the data set itself marks it unlabelled (not counted as bad)."""

    def __init__(self, message: str, unannotated: bool = False):
        super().__init__(message)
        self.unannotated = unannotated


class ModelFileError(InputError):
    """Fix the model file: an ONNX file, engine, checkpoint, hand finder model or model repository
    that is missing, damaged, of another kind or changed since it was written."""


class MissingBackend(HandSSCAError, RuntimeError):
    """Install or enable what is missing: an extra (its pip line is in the message), TensorRT,
    a GPU, the CUDA kernel library, Triton's environment."""


class OutputError(HandSSCAError, OSError):
    """Free the output: a result that cannot be written (full disk, read-only folder, another run
    writing there); names the file."""


class ServingError(HandSSCAError, RuntimeError):
    """A serving failure: Triton would not start, stopped or answered with an error."""


class RunError(HandSSCAError, RuntimeError):
    """A run that failed on the way: an export whose parity check failed, a runner or training
    step that failed, a source that stopped; the message says what to change."""


def one_line(text) -> str:
    """``text`` (a message, or an exception) on one line: a newline or other control character
    (a file name can hold one) is shown escaped, so a one-line message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless one: "1 hand", "2 hands", "0 images"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def interrupted_import(exc: BaseException) -> bool:
    """Whether ``exc`` is an import that Ctrl-C broke: a native module (ONNX Runtime's pybind11
    one) interrupted while it initialised raises ImportError("initialization failed") with the
    KeyboardInterrupt as its context."""
    seen = exc.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False
