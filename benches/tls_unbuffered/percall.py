#!/usr/bin/env python3
"""Per-round figures from a callgrind output file: self cost per function (grouped),
call counts of malloc/free/realloc/memcpy/memmove, divided by the number of rounds."""
import re, sys, collections
path, rounds = sys.argv[1], int(sys.argv[2])
from cgnames import name_of
self_cost = collections.Counter()
calls = collections.Counter()
cur = None; pending_call = None; total = 0
for line in open(path):
    line = line.rstrip('\n')
    if line.startswith('fn='):
        cur = name_of(line[3:]); continue
    if line.startswith('cfn='):
        cfn = name_of(line[4:]); continue
    if line.startswith(('cfi=','cfl=','fi=','fe=','fl=','ob=','cob=')):
        continue
    if line.startswith('calls='):
        n = int(line[6:].split()[0]); calls[cfn] += n; pending_call = True; continue
    if line and (line[0].isdigit() or line[0] in '+-*'):
        parts = line.split()
        if len(parts) >= 2:
            if pending_call:
                pending_call = None   # inclusive cost of the call: not self cost
            else:
                self_cost[cur] += int(parts[1]); total += int(parts[1])
print(f"total Ir {total:,}  per round {total/rounds:,.1f}")
def group(n):
    if re.search(r'aws_lc|aes|gcm|ghash|aead|EVP_', n, re.I): return 'crypto (aws-lc + aws-lc-rs AEAD)'
    if re.search(r'^(malloc|free|_int_free|_int_malloc|realloc|_int_realloc|cfree|__libc_|tcache|unlink_chunk|malloc_consolidate|__rust_alloc|__rust_dealloc|__rdl_|.*alloc::alloc)', n): return 'allocator (malloc/free)'
    if re.search(r'mem(cpy|move|set)', n): return 'memcpy/memmove/memset'
    if n.startswith(('srv_round','harness')) or 'harness' in n: return 'harness (caller code)'
    if 'rustls' in n: return 'rustls (other)'
    return 'other'
g = collections.Counter()
for n, c in self_cost.items(): g[group(n)] += c
print("\nself cost by group, Ir per round:")
for k, c in g.most_common(): print(f"  {c/rounds:9.1f}  {k}")
print("\ntop functions, self Ir per round:")
for n, c in self_cost.most_common(int(sys.argv[3]) if len(sys.argv) > 3 else 30):
    print(f"  {c/rounds:8.1f}  {n[:150]}")
print("\ncalls per round:")
for n, c in sorted(calls.items(), key=lambda x: -x[1]):
    if re.search(r'^(malloc|free|realloc|calloc|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_alloc|__rdl_dealloc)$|mem(cpy|move|set)|^_int_(malloc|free)', n):
        print(f"  {c/rounds:6.2f}  {n[:120]}")
