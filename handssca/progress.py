"""What a long step says before it starts: one line on stderr, flushed, so that nobody waits on a
silent terminal (a step that can take more than a few seconds on 2 cores says what it is doing;
loops show a tqdm bar with their rate instead)."""

from __future__ import annotations

import sys


def say(text: str) -> None:
    """``text`` (a step about to start: "export: tracing the network ...", ending in " ...") on stderr."""
    print(text, file=sys.stderr, flush=True)


def without_progress(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not progress (``say``'s lines end in " ..."): what a test
    of a one-line error counts."""
    return [line for line in stderr.strip().splitlines() if not line.endswith(" ...")]
