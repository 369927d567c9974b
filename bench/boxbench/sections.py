"""Sections of RESULTS.md that other commands write (between HTML-comment markers), so that
bench/run.py, which rewrites the file, keeps them, and each command replaces only its own."""

import re

# bench/onsale.py's section.
ONSALE = "onsale"
# bench/door.py's section.
DOOR = "door"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def marked(text: str, name: str) -> str | None:
    """The section `name` of `text`, markers included; None if it has none."""
    begin, end = _markers(name)
    match = re.search(re.escape(begin) + r".*?" + re.escape(end), text, re.DOTALL)
    return match.group(0) if match else None


def with_section(text: str, name: str, body: str) -> str:
    """`text` with section `name` set to `body` (in place, or appended at the end)."""
    begin, end = _markers(name)
    section = f"{begin}\n{body.strip()}\n{end}"
    old = marked(text, name)
    if old is not None:
        return text.replace(old, section)
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section + "\n"


def keep_sections(old: str, new: str, names: tuple[str, ...] = (ONSALE, DOOR)) -> str:
    """`new`, with the sections `old` had and `new` lacks carried over at its end."""
    for name in names:
        section = marked(old, name)
        if section is not None and marked(new, name) is None:
            new = new.rstrip("\n") + "\n\n" + section + "\n"
    return new
