"""The provenance graph under construction: nodes, edges, problems, and hashing of files on disk.

Relative paths in records are relative to the working directory of the step that wrote them; for
the workflow that is the parent of the results folder, so they are resolved against it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .records import sha256_file


class TracerBase:
    """State and small tools shared by the tracing steps (chain, data, checks)."""

    def __init__(self, results_dir: str | os.PathLike = "results", rescore: bool = True,
                 reseparate: int = 0):
        self.results = Path(results_dir)
        self.root = self.results.parent
        self.rescore = rescore
        self.reseparate = reseparate  # separations still to run again and compare
        self.nodes: dict[str, dict] = {}
        self.edges: list[dict] = []
        self.problems: list[dict] = []
        self.warnings: list[str] = []
        self._hashes: dict[tuple, str] = {}
        self._manifest: dict | None = None

    def resolve(self, path) -> Path:
        """A path as recorded (relative to the working directory of the run) -> a usable path."""
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    def local(self, path) -> Path:
        """A path given here (relative to the current directory) -> as the records would give it."""
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root.absolute())
        except ValueError:
            return path

    def hash(self, path) -> str | None:
        """sha256 of the file now (None when missing), computed once a file per process."""
        path = self.resolve(path)
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def node(self, nid: str, **attrs) -> str:
        entry = self.nodes.setdefault(nid, {"kind": nid.split(":", 1)[0], "status": "ok"})
        entry.update(attrs)
        return nid

    def edge(self, src: str, dst: str, relation: str) -> None:
        item = {"from": src, "to": dst, "relation": relation}
        if item not in self.edges:
            self.edges.append(item)

    def problem(self, nid: str, file, message: str, expected=None, actual=None) -> None:
        item = {"node": nid, "file": str(file), "message": message, "expected": expected, "actual": actual}
        if item not in self.problems:
            self.problems.append(item)
        self.nodes[nid]["status"] = "mismatch"

    def verify(self, nid: str, path, expected: str, what: str, recorded_in) -> bool:
        actual = self.hash(path)
        if actual == expected:
            return True
        self.problem(nid, path, f"{what} {'missing' if actual is None else 'changed'} since "
                     f"{recorded_in} recorded its sha256", expected, actual)
        return False

    def load_json(self, nid: str, path) -> dict | None:
        try:
            doc = json.loads(self.resolve(path).read_text())
        except (OSError, ValueError) as exc:
            self.problem(nid, path, f"unreadable ({exc})")
            return None
        if not isinstance(doc, dict):
            self.problem(nid, path, "not a JSON object; the record is damaged")
            return None
        return doc

    def malformed(self, nid: str, path, exc: Exception) -> None:
        """A record without a field the chain needs (damaged or hand-edited)."""
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        self.problem(nid, path, f"malformed record ({what}); write it again with the step that makes it")
