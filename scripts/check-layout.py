#!/usr/bin/env python3
"""Checks the layout of the sources: no import circle between the source files of a crate, and
no source file over MAX_LINES lines of code (its `#[cfg(test)]` module and the `tests/` folders
apart): a file that grows past that splits along its concepts.

Import circles:

A file "uses" another when it names one of that file's module paths (`super::hub::Outbox`,
`crate::server::cmd::Inner`, `use super::{error::EngineError, …}`). A module using its own
ancestor (a child naming `super::Table` of its parent's `mod.rs`) is the normal shape and is not
counted; any other circle is: files that cannot be read without each other.

    python3 scripts/check-layout.py   # prints the circles and the long files; exits 1 on any

The test command runs it (docs/development.md).
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crate_sources():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in ("target", "node_modules", ".git")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            yield os.path.join(dirpath, "src")


def module_path(src, path):
    """The module path of a file below `src` (`[]` for lib.rs/main.rs)."""
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def references(text):
    """The paths a file names (`super::…`, `crate::…`, `self::…`), each as its list of segments;
    a brace group (`use super::{a::X, b}`) gives one path per name in it."""
    text = re.sub(r"//[^\n]*", "", text)
    out = []
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)*)(::\{)?", text):
        head = [m.group(1)] + [p for p in m.group(2).split("::") if p]
        if not m.group(3):
            out.append(head)
            continue
        # The group, up to its matching brace; the first segment of each name is enough.
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        for part in re.split(r",(?![^{]*\})", text[m.end() : i - 1]):
            part = part.strip().split("::")[0].strip()
            if part and part not in ("self", "*"):
                out.append(head + [part])
    return out


def resolve(here, ref, modules):
    """The module (a key of `modules`) that `ref`, named in module `here`, points into."""
    if ref[0] == "crate":
        base, rest = (), ref[1:]
    else:
        # `self` is `here`; each `super` climbs one module (a mod.rs is its directory's module).
        ups = 0
        while ups < len(ref) and ref[ups] == "super":
            ups += 1
        rest = ref[ups:] if ups else ref[1:]
        base = here[: max(len(here) - ups, 0)]
    best = base if base in modules else None
    path = base
    for p in rest:
        path = path + (p,)
        if path not in modules:
            break
        best = path
    return best


def cycles_in(src):
    files = []
    for dirpath, _, filenames in os.walk(src):
        for f in filenames:
            if f.endswith(".rs"):
                files.append(os.path.join(dirpath, f))
    modules = {module_path(src, f): f for f in files}
    graph = {m: set() for m in modules}
    for m, f in modules.items():
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        for ref in references(text):
            target = resolve(m, ref, modules)
            if target is None or target == m:
                continue
            # A module naming one of its ancestors (its parent's items) is the normal shape.
            if m[: len(target)] == target:
                continue
            # A parent naming its own children is too (it declares and re-exports them).
            if target[: len(m)] == m:
                continue
            graph[m].add(target)
    # Strongly connected components (Tarjan).
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(os.path.relpath(modules[c], ROOT) for c in comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


MAX_LINES = 650  # "about 600"


def long_files(src):
    out = []
    for dirpath, _, filenames in os.walk(src):
        for f in filenames:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
            code = next((i for i, l in enumerate(lines) if l.startswith("#[cfg(test)]")), len(lines))
            if code > MAX_LINES:
                out.append((code, os.path.relpath(path, ROOT)))
    return out


def main():
    found, long = [], []
    for src in sorted(crate_sources()):
        found.extend(cycles_in(src))
        long.extend(long_files(src))
    for c in found:
        print("import circle: " + " <-> ".join(c))
    for n, path in sorted(long, reverse=True):
        print(f"{path}: {n} lines of code, over {MAX_LINES}: split it along its concepts")
    if found or long:
        sys.exit(1)
    print(f"no import circles between source files; none over {MAX_LINES} lines of code")


if __name__ == "__main__":
    main()
