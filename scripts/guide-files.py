#!/usr/bin/env python3
"""Writes the code docs/guide.md shows from the files it comes from, so that every snippet of
the guide is code that compiles (and is tested) as it is:

- after a `<!-- file: path -->` line, the file whole;
- after a `<!-- items: path kind name, kind name … -->` line, those items of a Rust file (`fn
  messages`, `struct Say`, `impl Say`, `enum Refused`), each with its doc comments and
  attributes, in the order named, a blank line between them.

    python3 scripts/guide-files.py          # rewrites the guide's snippets
    python3 scripts/guide-files.py --check  # exits 1 if a snippet differs (the test command)
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
guide = root / "docs" / "guide.md"
text = guide.read_text()


def item(path: str, kind: str, name: str) -> str:
    """One item of a Rust file: its doc comments and attributes (the lines above it, up to a
    blank line), then the item to its closing brace (or its `;`)."""
    lines = (root / path).read_text().split("\n")
    head = re.compile(
        r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?" + re.escape(kind) + r"\s+" + re.escape(name) + r"\b"
    )
    starts = [i for i, line in enumerate(lines) if head.match(line)]
    if len(starts) != 1:
        sys.exit(f"{path}: {len(starts)} items `{kind} {name}` (one expected)")
    first = last = starts[0]
    while first > 0 and lines[first - 1].strip():
        first -= 1
    depth, opened = 0, False
    while True:
        code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[last]).split("//")[0]
        for c in code:
            if c in "{([":
                depth += 1
                opened = opened or c == "{"
            elif c in "})]":
                depth -= 1
        if depth == 0 and (opened or code.rstrip().endswith(";")):
            break
        last += 1
    return "\n".join(lines[first : last + 1]) + "\n"


def whole(m: re.Match) -> str:
    path, lang = m.group(1), m.group(2)
    return f"<!-- file: {path} -->\n```{lang}\n{(root / path).read_text()}```\n"


def items(m: re.Match) -> str:
    path, spec, lang = m.group(1), m.group(2), m.group(3)
    parts = [item(path, *s.split()) for s in spec.split(",")]
    return f"<!-- items: {path} {spec} -->\n```{lang}\n" + "\n".join(parts) + "```\n"


new = re.sub(r"<!-- file: (\S+) -->\n```(\w+)\n.*?\n```\n", whole, text, flags=re.S)
new = re.sub(r"<!-- items: (\S+) ([^>]+?) -->\n```(\w+)\n.*?\n```\n", items, new, flags=re.S)
if "--check" in sys.argv[1:]:
    if new != text:
        sys.exit("docs/guide.md does not show its code as the files hold it: run python3 scripts/guide-files.py")
elif new != text:
    guide.write_text(new)
    print("docs/guide.md: the code it shows, rewritten")
