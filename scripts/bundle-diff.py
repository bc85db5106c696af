#!/usr/bin/env python3
"""Sums two `twiggy top --format csv` outputs per crate and prints the difference, biggest first.

    python3 scripts/bundle-diff.py demo/top.csv plain/top.csv

(See docs/development.md, "Where the browser bundle's bytes go", for how to make the CSVs.)
"""
import csv, sys, re, collections
def crate_of(name):
    n = name
    # generic: take first path segment of the demangled name, handling <impl ...> forms
    m = re.match(r'^<?\s*(?:&|&mut |dyn )?([A-Za-z_][A-Za-z0-9_]*)::', n)
    if m: return m.group(1)
    if n.startswith('data['): return 'data'
    return 'other:' + n[:25]
def load(p):
    tot = collections.Counter()
    with open(p) as f:
        r = csv.DictReader(f)
        for row in r:
            if row['Name'].startswith('"'):
                continue  # the names section (dropped in a release build)
            tot[crate_of(row['Name'])] += int(row['ShallowSize'])
    return tot
a = load(sys.argv[1]); b = load(sys.argv[2])
keys = sorted(set(a)|set(b), key=lambda k: -(a[k]-b[k]))
print("crate", "first", "second", "diff")
for k in keys[:40]:
    print(f"{k:40s} {a[k]:8d} {b[k]:8d} {a[k]-b[k]:8d}")
print("total", sum(a.values()), sum(b.values()))
