"""Rows of a resumable benchmark, one JSON object per line of a ``.jsonl`` file."""
from __future__ import annotations

import json
from pathlib import Path


def stored_rows(path: Path, keep: bool) -> list[dict]:
    """The rows stored at ``path`` when ``keep`` (``--resume`` / ``--report-only``); else none, and the file is removed."""
    if not path.exists():
        return []
    if not keep:
        path.unlink()
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: Path, row: dict) -> None:
    """Append one finished row, so that a stopped run keeps it."""
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
