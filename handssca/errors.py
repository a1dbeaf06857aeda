"""The project's one error family.

Every failure a user can cause or fix (a bad file, a missing dependency, a refused option, a
GPU or runtime that cannot run a model) is a ``HandSSCAError``: its message is one line that
names the file or option and the problem, and the ``handssca`` command prints it and exits 1.
Each layer has its own subclass (``ManoFileError``, ``OnnxRunnerError``, ``TensorRTError`` ...),
which keeps the built-in base it had (``ValueError``, ``RuntimeError``) for callers that catch
those. Anything else that escapes is a bug and keeps its traceback.
"""


class HandSSCAError(Exception):
    """A user-facing failure: one line naming the file or option and the problem."""


def one_line(text) -> str:
    """``text`` (a message, or an exception) on one line: a newline or other control character
    (a file name can hold one) is shown escaped, so a one-line message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
