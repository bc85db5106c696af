#!/usr/bin/env python3
"""Writes the files docs/guide.md shows whole (each after a `<!-- file: path -->` line) from the
files themselves, so that the guide shows them as they are. sssync-leptos's test
`the_guide_shows_the_starters_files_whole_as_they_are` fails until this has run after a change.

    python3 scripts/guide-files.py
"""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
guide = root / "docs" / "guide.md"
text = guide.read_text()


def whole(m: re.Match) -> str:
    path, lang = m.group(1), m.group(2)
    return f"<!-- file: {path} -->\n```{lang}\n{(root / path).read_text()}```\n"


new = re.sub(r"<!-- file: (\S+) -->\n```(\w+)\n.*?\n```\n", whole, text, flags=re.S)
if new != text:
    guide.write_text(new)
    print("docs/guide.md: the files it shows, rewritten")
