#!/usr/bin/env python3
"""Server-side call counts per round from a callgrind file made with --separate-callers=40:
only call arcs whose callee context runs through srv_round_* are counted (callgrind counts
calls even while collection is toggled off, so the client's calls must be filtered out)."""
import re, sys, collections
path, rounds = sys.argv[1], int(sys.argv[2])
from cgnames import name_of
WRAP = {'__rustc::__rdl_alloc','__rustc::__rust_alloc','__rustc::__rdl_dealloc','__rustc::__rust_dealloc',
        '__rustc::__rdl_realloc','__rustc::__rust_realloc','free','malloc'}
TARGET = re.compile(r'^(malloc|free|realloc|calloc|__memcpy\w*|__memmove\w*|memcpy|memmove|__memset\w*|memset)$')
calls = collections.Counter(); sites = collections.Counter()
cfn = None
for line in open(path):
    if line.startswith('cfn='):
        cfn = name_of(line[4:].rstrip('\n')); continue
    if line.startswith('fn='):
        name_of(line[3:].rstrip('\n')); continue
    if line.startswith('calls=') and cfn and "'srv_round_" in cfn:
        n = int(line[6:].split()[0])
        ctx = cfn.split("'")
        base = ctx[0]
        if not TARGET.match(base): continue
        # skip an arc from malloc to _int_malloc etc.: only the outermost allocator/memcpy call
        if len(ctx) > 1 and TARGET.match(ctx[1]): continue
        caller = next((c for c in ctx[1:] if c not in WRAP and not c.startswith(('<alloc::raw_vec','alloc::raw_vec','core::ptr::drop_in_place','alloc::collections'))), '?')
        calls[base] += n; sites[(base, caller)] += n
print("server-side calls per round:")
for b, c in calls.most_common(): print(f"  {c/rounds:6.2f}  {b}")
print("by call site (first caller outside the allocator/Vec/drop glue):")
for (b, s), c in sorted(sites.items(), key=lambda x: (x[0][0], -x[1])):
    print(f"  {c/rounds:6.2f}  {b:<30} <- {s[:140]}")
