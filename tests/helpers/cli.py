"""What the command-line tests compare: a folder's content hash and the one-line refusal of `main.py`."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_hash(root: Path) -> str:
    """sha256 over every file's relative path and bytes under `root`."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def one_line_error(proc, status: int = 2) -> str:
    """The refusal: the given exit status, no traceback, and its last stderr line `main.py: error: ...`."""
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("main.py: error: "), proc.stderr[-3000:]
    return last
