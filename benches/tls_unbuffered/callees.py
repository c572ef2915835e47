#!/usr/bin/env python3
"""Inclusive Ir per round of the calls made by the given caller functions (and their self Ir)."""
import re, sys, collections
path, rounds, callers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
from cgnames import name_of
incl = collections.Counter(); selfc = collections.Counter(); cur = cfn = None; pend = False
for line in open(path):
    line = line.rstrip('\n')
    if line.startswith('fn='): cur = name_of(line[3:]); continue
    if line.startswith('cfn='): cfn = name_of(line[4:]); continue
    if line.startswith('calls='): pend = True; continue
    if line and (line[0].isdigit() or line[0] in '+-*'):
        p = line.split()
        if len(p) < 2: continue
        if pend:
            pend = False
            if cur in callers: incl[(cur, cfn)] += int(p[1])
        elif cur in callers: selfc[cur] += int(p[1])
for c in callers:
    print(f"{c}: self {selfc[c]/rounds:.1f} Ir/round; calls (inclusive Ir/round):")
    for (k, callee), v in sorted(incl.items(), key=lambda x: -x[1]):
        if k == c: print(f"   {v/rounds:8.1f}  {callee[:130]}")
