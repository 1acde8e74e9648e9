"""Provenance graph and verification: trace every score back to what produced it, re-hashing
every file on the way (what each step records: dannasep.provenance.records).

`Tracer` follows score -> estimates -> separation (or blend -> every component) -> checkpoint
(identified by its content hash) -> train config, dataset manifest, commit, and compares every
recorded sha256 with the file on disk now: a checkpoint replaced after scoring, an estimate edited
later, or a dataset that changed since training is a problem naming the file.

Relative paths in records are relative to the working directory of the step that wrote them; for
the workflow that is the parent of the results folder, so they are resolved against it.

The graph (`results/provenance.json`): {"format", "ok", "problems", "warnings", "table",
"nodes": {id: {"kind", "status", ...}}, "edges": [{"from", "to", "relation"}]} with ids
cell:<system>/<source> score:<path> estimates:<folder> separation:<path> blend:<path>
checkpoint:<sha256> pointer:<path> config:<sha256> dataset:<manifest hash> file:<path>
references:<path> weights:<path|paper> commit:<sha> download:<sha256> (a published weight file,
where the chain of an imported or released checkpoint ends: its URL and sha256).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import subprocess
from pathlib import Path

from ..constants import SOURCES
from ..errors import DannasepError
from .records import sha256_file

FORMAT = "dannasep-provenance/1"
SDR_TOLERANCE_DB = 1e-4  # museval's JSON keeps 1e-5 dB


def canonical_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None (the graph is strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _git_knows(commit: str) -> bool:
    from .code_state import REPO_ROOT

    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# ---------------------------------------------------------------------------------------------
# Tracing and verification
# ---------------------------------------------------------------------------------------------

class Tracer:
    """Builds the provenance graph of score files, verifying every recorded hash as it goes."""

    def __init__(self, results_dir: str | os.PathLike = "results", rescore: bool = False):
        self.results = Path(results_dir)
        self.root = self.results.parent
        self.rescore = rescore
        self.nodes: dict[str, dict] = {}
        self.edges: list[dict] = []
        self.problems: list[dict] = []
        self.warnings: list[str] = []
        self._hashes: dict[tuple, str] = {}
        self._manifest: dict | None = None

    # -- small tools --------------------------------------------------------------------------
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
            return json.loads(self.resolve(path).read_text())
        except (OSError, ValueError) as exc:
            self.problem(nid, path, f"unreadable ({exc})")
            return None

    # -- the chain ----------------------------------------------------------------------------
    def trace_score(self, path) -> str:
        nid = f"score:{path}"
        if nid in self.nodes:
            return nid
        self.node(nid, path=str(path), sha256=self.hash(path))
        doc = self.load_json(nid, path)
        if doc is None:
            return nid
        from ..evaluation.scores import track_scores

        table = track_scores([self.resolve(path)])["SDR"]
        self.node(nid, sdr={t: float(v) for (_, t), v in table.items()})
        prov = doc.get("provenance")
        if not prov:
            self.problem(nid, path, "no provenance recorded; re-run `dannasep evaluate` to score it again")
            return nid
        self.node(nid, track=prov["track"], mode=prov["mode"], created_utc=prov.get("created_utc"),
                  versions=prov["versions"])
        self.edge(nid, self.trace_estimates(prov["estimates"], path), "scored")
        self.edge(nid, self.trace_references(prov["references"], path), "against")
        self.edge(nid, self.commit(prov["code"]), "scored with code")
        if prov.get("manifest"):
            self.edge(nid, self.dataset(prov["manifest"]["manifest_hash"], path), "references from")
        if self.rescore:
            self._rescore(nid, path, doc, prov)
        return nid

    def trace_estimates(self, record: dict, recorded_in) -> str:
        folder = Path(record["folder"])
        nid = self.node(f"estimates:{folder}", folder=str(folder))
        self.nodes[nid].setdefault("files", {}).update(record["files"])
        for name, sha in record["files"].items():
            self.verify(nid, folder / name, sha, "estimate", recorded_in)
        prov = record.get("provenance")
        if prov is None:
            self.problem(nid, folder / "provenance.json", "no provenance.json: these estimates cannot be "
                         "traced to a model; run the separation (or blend) step, then evaluate again")
            return nid
        self.verify(nid, prov["path"], prov["sha256"], "estimates provenance", recorded_in)
        doc = self.load_json(nid, prov["path"])
        if doc is None:
            return nid
        for name, sha in record["files"].items():
            written = doc.get("estimates", {}).get(name)
            if written != sha:
                self.problem(nid, folder / name, f"{recorded_in} used a file other than the one "
                             f"{prov['path']} says was written", written, sha)
        producer = (self.trace_blend if "components" in doc else self.trace_separation)(prov["path"], doc)
        self.edge(nid, producer, "produced by")
        return nid

    def trace_separation(self, path, doc: dict) -> str:
        if f"separation:{path}" in self.nodes:
            return f"separation:{path}"
        nid = self.node(f"separation:{path}", path=str(path), system=doc.get("system"),
                        settings=doc.get("separation"), versions=doc.get("versions"))
        ckpt = doc["checkpoint"]
        cid = self.trace_checkpoint(ckpt["path"], ckpt["sha256"], path)
        self.edge(nid, cid, "separated by")
        if ckpt.get("pointer"):
            self.edge(nid, self.check_pointer(ckpt["pointer"], ckpt["sha256"], cid, path), "via pointer")
        mixture = doc["mixture"]
        self.edge(nid, self.data_file(mixture["path"], mixture["sha256"], "mixture", path), "separated from")
        self.edge(nid, self.commit(doc.get("code")), "separated with code")
        return nid

    def trace_blend(self, path, doc: dict) -> str:
        from ..blend.weights import PAPER_WEIGHTS

        if f"blend:{path}" in self.nodes:
            return f"blend:{path}"
        weights = doc["weights"]
        nid = self.node(f"blend:{path}", path=str(path), system=doc.get("system"),
                        weights=weights["table"], versions=doc.get("versions"))
        wid = self.node(f"weights:{weights['path']}", path=weights["path"], sha256=weights["sha256"])
        if weights["path"] == "paper":
            published = {m: {s: PAPER_WEIGHTS[m][s] for s in row} for m, row in weights["table"].items()
                         if m in PAPER_WEIGHTS}
            if published != weights["table"]:
                self.problem(wid, path, f"weights {weights['table']} are not the published {PAPER_WEIGHTS}")
        else:
            self.verify(wid, weights["path"], weights["sha256"], "blend weights", path)
        self.edge(nid, wid, "weights")
        for model, component in doc["components"].items():
            self.edge(nid, self.trace_estimates(component, path), f"component {model}")
        self.edge(nid, self.commit(doc.get("code")), "blended with code")
        return nid

    def locate_checkpoint(self, path, sha: str) -> Path:
        """The recorded file, or (moved results) a `*-<sha8>.pt` under checkpoints/ with that hash."""
        recorded = self.resolve(path)
        if recorded.is_file():
            return recorded
        for candidate in sorted((self.results / "checkpoints").rglob(f"*-{sha[:8]}.pt")):
            if self.hash(candidate) == sha:
                return candidate
        return recorded

    def trace_checkpoint(self, path, sha: str, recorded_in) -> str:
        nid = f"checkpoint:{sha}"
        if nid in self.nodes:
            return nid
        found = self.locate_checkpoint(path, sha)
        self.node(nid, path=str(path) if found == self.resolve(path) else str(found), sha256=sha)
        if not self.verify(nid, found, sha, "checkpoint", recorded_in):
            return nid  # its content is not what was used: do not report what it says
        import torch

        record = torch.load(found, map_location="cpu", weights_only=True, mmap=True)
        self.node(nid, system=record.get("system"), model=record.get("model"), seed=record.get("seed"),
                  created_utc=record.get("created_utc"), versions=record.get("versions"),
                  scores=record.get("scores"),
                  training={k: v for k, v in record.get("training", {}).items() if k != "history"})
        if record.get("source"):  # an imported or released file: its chain ends at the download
            source = record["source"]
            relation = "runs as it is" if source.get("run_as_is") else "imported from"
            self.node(nid, source={k: v for k, v in source.items() if k not in ("mapping", "notes")})
            self.edge(nid, self.published_file(source, found), relation)
            self.edge(nid, self.commit(record.get("code")), "imported with code")
            return nid
        config = record.get("train_config")
        self.edge(nid, self.node(f"config:{canonical_hash(config)}", config=config), "trained with config")
        self.edge(nid, self.dataset(record.get("data", {}).get("manifest_hash"), found), "trained on")
        self.edge(nid, self.commit(record.get("code")), "trained with code")
        return nid

    def check_pointer(self, pointer, sha: str, checkpoint_id: str, recorded_in) -> str:
        nid = self.node(f"pointer:{pointer}", path=str(pointer))
        doc = self.load_json(nid, pointer)
        if doc is not None:
            self.node(nid, names=doc.get("checkpoint"), sha256=doc.get("sha256"))
            if doc.get("sha256") != sha:
                self.problem(nid, pointer, f"now names {doc.get('checkpoint')}, not the checkpoint "
                             f"{recorded_in} was made with: its estimates are stale; separate again",
                             sha, doc.get("sha256"))
        self.edge(nid, checkpoint_id, "named")
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

    # -- data, config and code ---------------------------------------------------------------
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
        current = self.manifest()
        nid = self.node(f"dataset:{expected_hash}", manifest_hash=expected_hash, manifest=str(current["path"]))
        if expected_hash is None:
            self.problem(nid, recorded_in, "records no dataset manifest hash, so its data cannot be "
                         "verified; train again with --manifest")
        elif current["hash"] is None:
            self.problem(nid, current["path"], f"missing; cannot check the dataset {recorded_in} names",
                         expected_hash, None)
        elif current["hash"] != expected_hash:
            self.problem(nid, current["path"], f"the dataset differs from the one {recorded_in} was "
                         "made with; restore that dataset or re-run the steps", expected_hash, current["hash"])
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

    def trace_references(self, record: dict, recorded_in) -> str:
        nid = self.node(f"references:{record['path']}", path=record["path"])
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
            message = f"commit {sha}: some steps ran with uncommitted changes; the commit alone does not give their code"
            if message not in self.warnings:
                self.warnings.append(message)
        return nid

    def _rescore(self, nid: str, path, doc: dict, prov: dict) -> None:
        """Recompute the framewise SDR from the files on disk and compare with the score file."""
        import numpy as np

        from ..evaluation.references import read_estimates, read_references
        from ..evaluation.scores import evaluate_track

        try:
            fresh = evaluate_track(read_references(self.resolve(prov["references"]["path"])),
                                   read_estimates(self.resolve(prov["estimates"]["folder"])),
                                   mode="sdr", track_name=prov["track"])
        except DannasepError as exc:
            self.problem(nid, path, f"cannot rescore: {exc}")
            return
        recorded = {t["name"]: [f["metrics"]["SDR"] for f in t["frames"]] for t in doc["targets"]}
        for target in fresh["targets"]:
            old = np.array(recorded.get(target["name"], []), dtype=float)
            new = np.array([f["metrics"]["SDR"] for f in target["frames"]], dtype=float)
            if old.shape != new.shape or not np.allclose(old, new, atol=SDR_TOLERANCE_DB, rtol=0, equal_nan=True):
                self.problem(nid, path, f"{target['name']} SDR frames differ from a recomputation "
                             f"on the files now on disk: {old.tolist()} vs {new.tolist()}")
        self.nodes[nid]["rescored"] = True

    # -- table cells --------------------------------------------------------------------------
    def add_system(self, system: str, folder: str, tracks=None, sources=SOURCES) -> list[str]:
        """Cells of one table row (median over tracks of the median over frames, and their avg)."""
        from ..evaluation.scores import aggregate

        files = [self.local(f) for f in score_files(self.results, system, folder, tracks)]
        present = [f for f in files if self.resolve(f).is_file()]
        cells = []
        table = aggregate([self.resolve(f) for f in present]) if present else None
        for source in sources:
            value = float(table.loc[source, "SDR"]) if table is not None and source in table.index else None
            cid = self.node(f"cell:{system}/{source}", system=system, source=source, metric="SDR",
                            value=value, tracks=len(present), folder=folder,
                            aggregation="median over tracks of the median over 1 s frames (museval)")
            for f in files:
                if f not in present:
                    self.problem(cid, f, "score file missing; run `snakemake` to evaluate this track")
                    continue
                self.edge(cid, self.trace_score(f), "median over tracks")
            cells.append(cid)
        if list(sources) == list(SOURCES):
            values = [self.nodes[c]["value"] for c in cells]
            avg = None if None in values else sum(values) / len(values)
            aid = self.node(f"cell:{system}/avg", system=system, source="avg", metric="SDR", value=avg,
                            aggregation="mean of the four sources")
            for c in cells:
                self.edge(aid, c, "mean of")
            cells.append(aid)
        return cells

    def graph(self, **extra) -> dict:
        table = {}
        for node in self.nodes.values():
            if node["kind"] == "cell":
                table.setdefault(node["system"], {})[node["source"]] = node["value"]
        return _clean({"format": FORMAT, "ok": not self.problems,
                       "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "results": str(self.results), **extra, "table": table,
                       "problems": self.problems, "warnings": self.warnings,
                       "nodes": self.nodes, "edges": self.edges})


def score_files(results_dir, system: str, folder: str, tracks=None) -> list[Path]:
    """results/scores/<system>/<folder>/<track>.json for `tracks` (default: every file there)."""
    base = Path(results_dir) / "scores" / system / folder
    if tracks:
        return [base / f"{t}.json" for t in tracks]
    found = sorted(p for p in base.glob("*.json") if not p.name.startswith("."))
    if not found:
        raise DannasepError(f"{base}: no score files; evaluate {system} first (snakemake), "
                            "or check the system name, --folder and --results")
    return found


def build_graph(results_dir, systems, folder: str = "test", tracks=None, rescore: bool = False) -> dict:
    """The provenance graph of the paper table: cells -> scores -> estimates -> checkpoints -> data,
    config, commit; every hash verified (see `graph["problems"]`)."""
    tracer = Tracer(results_dir, rescore=rescore)
    for system in systems:
        tracer.add_system(system, folder, tracks)
    return tracer.graph(systems=list(systems), folder=folder, tracks=list(tracks) if tracks else None)


def trace_score_file(path, results_dir="results", rescore: bool = False) -> dict:
    """The provenance graph of one score file."""
    tracer = Tracer(results_dir, rescore=rescore)
    tracer.trace_score(tracer.local(path))
    return tracer.graph(score=str(path))


def write_graph(graph: dict, path) -> None:
    from ..io import write_json

    write_json(path, graph)
