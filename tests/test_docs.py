"""The documentation: README.md (the landing page) and docs/*.md.

Checked without a network, in a fraction of a second:
- every relative link and image resolves to a file in the repository, and a link to a heading
  (``page.md#heading``) names a heading that page has (GitHub's anchors);
- every ``handssca <command> [<subcommand>]`` a page shows, in a code block or in inline code,
  is a command of the parser (``handssca.cli.build_parser``, walked through argparse's
  subparsers), and every long option shown after it on the same command line is one of that
  command's options;
- a source path a page names in inline code (``runtime/backends/onnx_runner.py``) exists;
- README.md stays a landing page: at most 200 lines.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from handssca.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

SHELL_BLOCKS = {"", "bash", "sh", "shell", "console", "zsh"}  # fenced blocks read as command lines
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
LONG_OPTION = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
SEPARATORS = re.compile(r"&&|\|\||;|\s\|\s")
SOURCE_DIRS = (
    "handssca",
    "runtime",
    "training",
    "export",
    "serving",
    "plugins",
    "benchmarks",
    "tools",
    "tests",
    "configs",
)
SOURCE_PATH = re.compile(rf"^(?:{'|'.join(SOURCE_DIRS)})/[\w./-]+\.(?:py|cpp|cu|h|md|yaml|json|txt)$")


class Page:
    """One markdown file split into its prose (fenced blocks blanked, line numbers kept) and its
    fenced code blocks (language, first line number, text)."""

    def __init__(self, path: Path, text: str | None = None):
        self.path = path
        self.text = path.read_text(encoding="utf-8") if text is None else text
        prose, self.blocks = [], []
        fence = None
        for number, line in enumerate(self.text.splitlines(), 1):
            match = FENCE.match(line)
            if fence is None and match:
                fence, language, start, body = match.group(1), match.group(2).lower(), number, []
                prose.append("")
            elif fence is not None and closes(line, fence):
                self.blocks.append((language, start, "\n".join(body)))
                fence = None
                prose.append("")
            elif fence is not None:
                body.append(line)
                prose.append("")
            else:
                prose.append(line)
        assert fence is None, f"{self.name}: a code block opened at line {start} is never closed"
        self.prose = "\n".join(prose)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT)) if self.path.is_relative_to(ROOT) else str(self.path)

    def line_of(self, offset: int) -> int:
        return self.prose.count("\n", 0, offset) + 1

    def links(self) -> list[tuple[int, str]]:
        """(line, target) of every markdown and HTML link and image outside code."""
        without_code = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), self.prose)
        found = [(self.line_of(m.start()), m.group(1)) for m in LINK.finditer(without_code)]
        found += [(self.line_of(m.start()), m.group(1)) for m in HTML_LINK.finditer(without_code)]
        return sorted(found)

    def anchors(self) -> set[str]:
        """GitHub's anchors for this page's headings (repeats get -1, -2, ...)."""
        seen: dict[str, int] = {}
        anchors = set()
        for line in self.prose.splitlines():
            match = HEADING.match(line)
            if not match:
                continue
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            anchors.add(base if count == 0 else f"{base}-{count}")
        return anchors

    def inline_code(self) -> list[tuple[int, str]]:
        """(line, text) of every inline code span in the prose, its whitespace collapsed and a
        table cell's escaped pipe (``\\|``) read as the pipe it shows."""
        return [
            (self.line_of(m.start()), " ".join(m.group(2).replace("\\|", "|").split()))
            for m in INLINE_CODE.finditer(self.prose)
        ]

    def command_lines(self) -> list[tuple[int, str]]:
        """(line, text) of everything shown as a command: each line of a shell code block
        (continuations joined, comments dropped) and each inline code span."""
        lines = []
        for language, start, body in self.blocks:
            if language not in SHELL_BLOCKS:
                continue
            pending, first = "", None
            for number, line in enumerate(body.splitlines(), start + 1):
                first = number if not pending else first
                line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
                if line.endswith("\\"):
                    pending += line[:-1] + " "
                    continue
                lines.append((first, (pending + line).strip().removeprefix("$ ")))
                pending = ""
            if pending:
                lines.append((first, pending.strip()))
        return lines + self.inline_code()


def closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a code block opened by ``fence``: the same character, at least as
    many, and nothing else."""
    text = line.strip()
    return text.startswith(fence) and not text.strip(fence[0])


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code spans and links as their text), lower case,
    without punctuation other than '-' and '_', spaces as '-'."""
    text = re.sub(r"(`+)(.+?)\1", r"\2", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def parser_commands() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command of ``handssca`` by its words, () for the top level, walked through the
    parser's subparsers."""
    found = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        found[words] = parser
        groups = parser._subparsers._group_actions if parser._subparsers is not None else []
        for action in groups:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))

    walk(build_parser(), ())
    return found


COMMANDS = parser_commands()


def has_subcommands(words: tuple[str, ...]) -> bool:
    return any(len(other) == len(words) + 1 and other[: len(words)] == words for other in COMMANDS)


def command_problems(text: str) -> list[str]:
    """What is wrong with the ``handssca`` commands in one command line: a command or
    subcommand the parser does not have, or a long option its command does not take."""
    problems = []
    for segment in SEPARATORS.split(text):
        tokens = [t.strip("\"'") for t in segment.split()]
        starts = [i for i, token in enumerate(tokens) if token == "handssca"]
        for n, start in enumerate(starts):
            rest = tokens[start + 1 : starts[n + 1] if n + 1 < len(starts) else len(tokens)]
            words: tuple[str, ...] = ()
            while rest and not rest[0].startswith(("-", "[")) and has_subcommands(words):
                if (*words, rest[0]) not in COMMANDS:
                    choices = sorted(w[-1] for w in COMMANDS if len(w) == len(words) + 1 and w[:-1] == words)
                    named = " ".join((*words, rest[0]))
                    problems.append(f"'handssca {named}': no such command (has: {', '.join(choices)})")
                    break
                words, rest = (*words, rest[0]), rest[1:]
            else:
                options = COMMANDS[words]._option_string_actions
                for token in rest:
                    for option in LONG_OPTION.findall(token.split("=", 1)[0]):
                        if option not in options:
                            problems.append(f"'handssca {' '.join(words)}' has no option {option}")
    return problems


def link_problems(page: Page) -> list[str]:
    problems = []
    for line, target in page.links():
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.path.parent / path_part).resolve() if path_part else page.path
        if not resolved.exists():
            problems.append(f"{page.name}:{line}: {target} -> no such file")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in Page(resolved).anchors():
            problems.append(f"{page.name}:{line}: {target} -> no heading with the anchor #{anchor} there")
    return problems


def path_problems(page: Page) -> list[str]:
    return [
        f"{page.name}:{line}: `{code}` -> no such file"
        for line, code in page.inline_code()
        if SOURCE_PATH.match(code) and "X." not in code and not (ROOT / code).exists()
    ]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_links_and_images_resolve(path):
    assert link_problems(Page(path)) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_commands_and_options_exist(path):
    page = Page(path)
    problems = [f"{page.name}:{line}: {p}" for line, text in page.command_lines() for p in command_problems(text)]
    assert problems == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_source_paths_exist(path):
    assert path_problems(Page(path)) == []


def test_readme_is_a_landing_page():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the detail into docs/"


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in Page(README).links()}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_the_checks_catch_what_they_should(tmp_path):
    """The checks themselves: a broken link, a missing anchor, a command or option that does not
    exist are each reported; a good page is not."""
    (tmp_path / "other.md").write_text("# A Heading: `with` code (and more)\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#a-heading-with-code-and-more) [ok](other.md#twice-1) [ok](#page)\n"
        "![missing](nowhere.png) [bad anchor](other.md#nope) `[not a link](nowhere.md)`\n\n"
        "```bash\nhandssca export --precision fp16 \\\n    --no-such-flag\n"
        "handssca serve start models  # --comment-is-not-checked\n```\n\n"
        "```text\nhandssca version  (not a command line)\n```\n\n"
        "Inline: `handssca serve nope`, `handssca frobnicate`, `python -m handssca bench --runs 3`,\n"
        "`handssca data synth [--train N] [--bogus]`, `handssca webcam --source 0\\|video`.\n"
    )
    p = Page(page)
    assert sorted(link_problems(p)) == sorted(
        [
            f"{p.name}:4: nowhere.png -> no such file",
            f"{p.name}:4: other.md#nope -> no heading with the anchor #nope there",
        ]
    )
    problems = [x for _, text in p.command_lines() for x in command_problems(text)]
    assert len(problems) == 4, problems
    assert "'handssca export' has no option --no-such-flag" in problems
    assert any("'handssca serve nope': no such command" in x for x in problems)
    assert any("'handssca frobnicate': no such command" in x for x in problems)
    assert "'handssca data synth' has no option --bogus" in problems
