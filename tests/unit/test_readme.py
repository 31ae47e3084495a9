"""README.md agrees with the code: every setting is documented, the Quickstart is two
commands, and every `make <target>` it mentions exists in the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAKEFILE = REPO / "Makefile"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_FENCE = re.compile(r"^(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_MAKE_CALL = re.compile(r"(?<![\w.-])make\s+([A-Za-z0-9][\w.-]*)")
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)")


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks, in order."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in markdown.splitlines():
        if _FENCE.match(line.strip()):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    assert current is None, "README.md has an unclosed code fence"
    return blocks


def section(markdown: str, title: str) -> str:
    """The text under the heading named ``title`` up to the next heading of its level or
    higher (headings inside code blocks do not count)."""
    lines = markdown.splitlines()
    start = level = None
    in_code = False
    for i, line in enumerate(lines):
        if _FENCE.match(line.strip()):
            in_code = not in_code
            continue
        match = None if in_code else _HEADING.match(line)
        if match is None:
            continue
        depth = len(match.group(1))
        if start is None:
            if match.group(2).lower() == title.lower():
                start, level = i + 1, depth
        elif level is not None and depth <= level:
            return "\n".join(lines[start:i])
    assert start is not None, f"README.md has no section {title!r}"
    return "\n".join(lines[start:])


def makefile_targets() -> set[str]:
    """Targets as `grep -E '^[a-z-]+:'` would see them (variable targets such as $(STAMP)
    and `:=` assignments excluded)."""
    targets = set()
    for line in MAKEFILE.read_text(encoding="utf-8").splitlines():
        match = _MAKE_TARGET.match(line)
        if match and not match.group(1).startswith("."):
            targets.add(match.group(1))
    return targets


def test_every_setting_is_documented(readme: str) -> None:
    names = [f"RTSCORE_{field.upper()}" for field in Settings.model_fields]
    missing = [name for name in names if not re.search(rf"\b{name}\b", readme)]
    assert not missing, f"README.md does not mention {missing}; add them to Configuration"


def test_quickstart_is_exactly_two_commands(readme: str) -> None:
    blocks = code_blocks(section(readme, "Quickstart"))
    assert blocks, "the Quickstart has no code block"
    commands = [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(commands) == 2, f"the Quickstart's code shows {commands}, not two commands"


def test_every_make_target_mentioned_exists(readme: str) -> None:
    code = [*code_blocks(readme), *_INLINE_CODE.findall(readme)]
    mentioned = {target for text in code for target in _MAKE_CALL.findall(text)}
    assert mentioned, "README.md mentions no `make <target>`"
    unknown = sorted(mentioned - makefile_targets())
    assert not unknown, f"README.md mentions make targets the Makefile lacks: {unknown}"


def test_the_helpers_see_what_they_should() -> None:
    text = (
        "# T\n\n## Quickstart\n\n```sh\nmake a\n# a comment\nmake b\n```\n\n"
        "```text\n## not a heading\n```\n\n### Sub\n\n`make c`\n\n## Next\n\n```\nx\n```\n"
    )
    blocks = code_blocks(section(text, "Quickstart"))
    assert blocks == ["make a\n# a comment\nmake b", "## not a heading"]
    assert "Next" not in section(text, "Quickstart")
    assert "make c" in section(text, "Quickstart")
    assert {"help", "demo", "test"} <= makefile_targets()
    assert "STAMP" not in makefile_targets()
