"""Callgrind's name compression, shared by the scripts here: `(id) name` defines a name, a later
`(id)` refers to it."""
import re

_names = {}


def name_of(tok):
    m = re.match(r'\((\d+)\)(?:\s+(.*))?', tok)
    if not m:
        return tok
    i, n = m.group(1), m.group(2)
    if n:
        _names[i] = n
    return _names[i]
