#!/usr/bin/env python3
"""Instructions per request by function group, from callgrind outputs of a binary built with
line tables (benches/live_instructions.sh builds it so; line tables do not change the code).

    cg_groups.py REQUESTS NAME=FILE [NAME=FILE ...]

prints one markdown table: a row per group, a column per NAME. Each instruction is counted once,
where it executes (exclusive cost), and given to a group by the source file it was compiled
from, so code inlined into another function still counts where it was written: the head parser
inlined into Connection::drive is "parse". Generic code from core/alloc (Vec, Option, slices)
counts for the function it was inlined into.
"""

import re
import sys
from collections import defaultdict

GROUPS = [
    ("loop", "src/server: poll, dispatch, ready queue, deadline heap, accept, counts"),
    ("connection", "src/connection: phases, buffers, timers of one connection"),
    ("parse", "head parser (src/http/head.rs, request, body) and httparse"),
    ("route", "the router and the handler: src/router.rs, matchit, src/app, src/handler.rs"),
    ("encode", "response head and Date (src/http/response.rs, date.rs)"),
    ("kernel calls", "libc's syscall wrappers, std::sys, std::time, mio: the way to the kernel"),
    ("memory", "memcpy/memmove/memset, malloc/free"),
    ("other", "anything else"),
]

OURS = [
    (r"src/http/(response|date)\.rs$", "encode"),
    (r"src/http/", "parse"),
    (r"src/(app/|handler\.rs|router\.rs)", "route"),
    (r"src/(server/|timer\.rs|counters\.rs|process/|bin/quiesce/main\.rs)", "loop"),
    (r"src/", "connection"),
]

FUNCTIONS = [
    (r"^quiesce::http::(response|date)::", "encode"),
    (r"^quiesce::http::|^httparse::|^core::str::converts::from_utf8", "parse"),
    (r"^quiesce::(app|router|handler)::|^<quiesce::(app|router)::|^matchit::", "route"),
    (r"^quiesce::(server|timer|counters|process)::|^<quiesce::server::", "loop"),
    (r"^quiesce::|^<quiesce::", "connection"),
    (r"^mio::|^<mio::|^std::sys::|^<std::sys::|^<std::time::|^std::time::|^<&?std::net::", "kernel calls"),
    (r"^slab::|^<slab::", "loop"),
]


def by_file(path):
    if "memmove" in path or "memset" in path or "memcpy" in path:
        return "memory"
    if "/httparse-" in path:
        return "parse"
    if "/mio-" in path or "/library/std/src/" in path or "/sysdeps/" in path:
        return "kernel calls"
    if "/slab-" in path:
        return "loop"
    if "/matchit-" in path:
        return "route"
    if "/library/core/" in path or "/library/alloc/" in path or not path or path == "???":
        return None  # generic code: the function it was inlined into decides
    for pattern, group in OURS:
        if re.search(pattern, path):
            return group
    return None


def by_function(name, obj):
    if re.search(r"mem(cpy|move|set)|malloc|free|realloc|cfree", name):
        return "memory"
    if "libc.so" in obj:
        return "kernel calls"
    for pattern, group in FUNCTIONS:
        if re.search(pattern, name):
            return group
    return "other"


def groups_of(path):
    names = {"file": {}, "fn": {}, "ob": {}}
    kind_of = {"fl": "file", "fi": "file", "fe": "file", "cfi": "file", "cfl": "file",
               "fn": "fn", "cfn": "fn", "ob": "ob", "cob": "ob"}

    def name(kind, text):
        m = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not m:
            return text
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "")

    cost = defaultdict(int)
    fl = file = fn = ob = ""
    skip_next = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^(c?f[lien]|cfn|c?ob)=(.*)$", line)
            if m:
                key, value = m.group(1), name(kind_of[m.group(1)], m.group(2))
                if key == "fl":
                    fl = file = value
                elif key in ("fi", "fe"):
                    file = value
                elif key == "fn":
                    fn, file = value, fl
                elif key == "ob":
                    ob = value
                continue
            if line.startswith("calls="):
                skip_next = True  # the next cost line is the call's inclusive cost
                continue
            if not line or not (line[0].isdigit() or line[0] in "+-*"):
                continue
            if skip_next:
                skip_next = False
                continue
            fields = line.split()
            if len(fields) < 2:
                continue
            group = by_file(file) or by_function(fn, ob)
            cost[group] += int(fields[1])
    return cost


def main():
    requests = int(sys.argv[1])
    columns = [arg.split("=", 1) for arg in sys.argv[2:]]
    tables = [(label, groups_of(path)) for label, path in columns]
    print("| group | " + " | ".join(label for label, _ in tables) + " | what |")
    print("|---|" + "--:|" * len(tables) + "---|")
    for group, what in GROUPS:
        cells = [f"{t.get(group, 0) / requests:,.0f}" for _, t in tables]
        print(f"| {group} | " + " | ".join(cells) + f" | {what} |")
    totals = [f"**{sum(t.values()) / requests:,.0f}**" for _, t in tables]
    print("| **total** | " + " | ".join(totals) + " | |")


if __name__ == "__main__":
    main()
