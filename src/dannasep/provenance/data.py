"""The data, dataset and code ends of a chain: dataset files against the manifest, the manifest
against its own file list, and the commits the steps ran."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def _git_knows(commit: str) -> bool:
    from .code_state import REPO_ROOT

    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class DataMixin:
    def manifest(self) -> dict:
        """results/data/manifest.json (checked once: its file list must hash to its manifest_hash)."""
        if self._manifest is None:
            from ..data.manifest import manifest_hash

            path = self.results / "data" / "manifest.json"
            try:
                doc = json.loads(path.read_text())
                entries = {e["path"]: e["sha256"] for e in doc["files"]}
                recomputed = manifest_hash(doc["files"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                doc, entries, recomputed = {}, {}, None
                self.warnings.append(f"{path}: unreadable ({exc}); run `dannasep validate --manifest`")
            self._manifest = {"path": path, "hash": doc.get("manifest_hash"), "entries": entries,
                              "recomputed": recomputed}
            if recomputed is not None and recomputed != doc.get("manifest_hash"):
                nid = self.node(f"dataset:{doc.get('manifest_hash')}", manifest=str(path))
                self.problem(nid, path, "file list does not hash to its manifest_hash (edited by hand?); "
                             "write it again with `dannasep validate --manifest`",
                             doc.get("manifest_hash"), recomputed)
        return self._manifest

    def dataset(self, expected_hash: str | None, recorded_in) -> str:
        """The dataset a record names, against the manifest's recomputed hash."""
        current = self.manifest()
        nid = self.node(f"dataset:{expected_hash}", manifest_hash=expected_hash, manifest=str(current["path"]))
        actual = current["recomputed"] or current["hash"]
        if expected_hash is None:
            self.problem(nid, recorded_in, "records no dataset manifest hash, so its data cannot be "
                         "verified; train again with --manifest")
        elif actual is None:
            self.problem(nid, current["path"], f"missing; cannot check the dataset {recorded_in} names",
                         expected_hash, None)
        elif actual != expected_hash:
            self.problem(nid, current["path"], f"the dataset differs from the one {recorded_in} was "
                         "made with; restore that dataset or re-run the steps", expected_hash, actual)
        return nid

    def data_file(self, path, sha: str, what: str, recorded_in) -> str:
        """A dataset file: recorded hash vs disk, and vs its entry in the dataset manifest."""
        nid = self.node(f"file:{path}", path=str(path), sha256=sha, role=what)
        self.verify(nid, path, sha, what, recorded_in)
        manifest = self.manifest()
        parts = Path(path).parts
        key = next(("/".join(parts[-n:]) for n in (3, 2) if "/".join(parts[-n:]) in manifest["entries"]), None)
        if key is None:
            self.nodes[nid]["in_manifest"] = False
            return nid
        self.nodes[nid]["in_manifest"] = key
        if manifest["entries"][key] != sha:
            self.problem(nid, path, f"{what} differs from the dataset manifest's {key}",
                         manifest["entries"][key], sha)
        self.edge(nid, self.dataset(manifest["hash"], manifest["path"]), "listed in")
        return nid

    def published_file(self, source: dict, recorded_in) -> str:
        """A published weight file (URL + sha256): re-hashed when on disk, else noted."""
        nid = self.node(f"download:{source['sha256']}", url=source.get("url"), path=source.get("path"),
                        sha256=source["sha256"], weights_kind=source.get("kind"), bytes=source.get("bytes"))
        if self.resolve(source["path"]).is_file():
            self.verify(nid, source["path"], source["sha256"], "published weights file", recorded_in)
        elif source.get("run_as_is"):
            self.problem(nid, source["path"], f"missing: the checkpoint runs this file as it is; "
                         f"fetch it from {source.get('url')}", source["sha256"], None)
        else:
            self.warnings.append(f"{source['path']}: not on disk, so its sha256 was not re-checked "
                                 f"(fetch it from {source.get('url')})")
        return nid

    def trace_references(self, record: dict, recorded_in, expected=None) -> str:
        nid = self.node(f"references:{record['path']}", path=record["path"])
        kind = "file" if str(record["path"]).endswith(".stem.mp4") else "folder"
        self.expect_place(nid, record["path"], kind, expected, f"the references {record['path']}")
        for path, sha in record["files"].items():
            self.edge(nid, self.data_file(path, sha, "reference", recorded_in), "file")
        return nid

    def commit(self, code: dict | None) -> str:
        code = code or {}
        sha = code.get("git_commit")
        nid = f"commit:{sha}"
        if nid not in self.nodes:
            known = bool(sha) and _git_knows(sha)
            self.node(nid, git_commit=sha, in_repository=known)
            if not sha:
                self.warnings.append("some steps recorded no git commit (not run from a git checkout)")
            elif not known:
                self.warnings.append(f"commit {sha}: not in this repository; fetch it to read the code")
        if code.get("git_dirty"):
            self.nodes[nid]["dirty"] = True
            diffs = self.nodes[nid].setdefault("diff_sha256", [])
            if code.get("diff_sha256") not in diffs:
                diffs.append(code.get("diff_sha256"))
            message = (f"commit {sha}: some steps ran with uncommitted changes (diff sha256 "
                       f"{', '.join(str(d)[:12] for d in diffs)}); the commit alone does not give their code")
            self.warnings = [w for w in self.warnings if not w.startswith(f"commit {sha}: some steps")]
            self.warnings.append(message)
        return nid
