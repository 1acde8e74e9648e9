"""Tracing a score back: score -> estimates -> separation (or blend -> every component) ->
checkpoint (by content hash) -> pointer; every recorded sha256 compared with the file on disk,
and the track and subset compared at every link (estimates of one track scored against another
track's references, or separated from another mixture, are a problem)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

STEM_SUFFIX = ".stem.mp4"


def canonical_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def place(path, kind: str) -> tuple[str, str] | None:
    """(subset folder, track) a path names, by the pipeline's layouts; None when it names none.

    kind: score (<subset>/<track>.json), folder (<subset>/<track>/), file (<subset>/<track>/x.wav
    or <subset>/<track>.stem.mp4).
    """
    path = Path(path)
    if path.name.endswith(STEM_SUFFIX):
        return path.parent.name, path.name[: -len(STEM_SUFFIX)]
    if kind == "score":
        return path.parent.name, path.stem
    if kind == "file":
        path = path.parent
    return (path.parent.name, path.name) if path.name else None


class ChainMixin:
    """The tracing steps from a score file to the checkpoint (needs TracerBase and DataMixin)."""

    def expect_place(self, nid: str, path, kind: str, expected: tuple[str, str] | None, what: str) -> None:
        found = place(path, kind)
        if expected and found and found != expected:
            self.problem(nid, path, f"{what} is of {found[0]}/{found[1]}, the score is of {expected[0]}/"
                         f"{expected[1]}: the chain mixes tracks", "/".join(expected), "/".join(found))

    def trace_score(self, path) -> str:
        nid = f"score:{path}"
        if nid in self.nodes:
            return nid
        self.node(nid, path=str(path), sha256=self.hash(path))
        doc = self.load_json(nid, path)
        if doc is None:
            return nid
        try:
            from ..evaluation.scores import track_scores

            table = track_scores([self.resolve(path)])["SDR"]
            self.node(nid, sdr={t: float(v) for (_, t), v in table.items()})
            prov = doc.get("provenance")
            if not prov:
                self.problem(nid, path, "no provenance recorded; re-run `dannasep evaluate` to score it again")
                return nid
            expected = place(path, "score")
            if prov["track"] != expected[1]:
                self.problem(nid, path, f"records track {prov['track']!r} in a file named for "
                             f"{expected[1]!r}", expected[1], prov["track"])
            self.node(nid, track=prov["track"], mode=prov["mode"], created_utc=prov.get("created_utc"),
                      versions=prov["versions"])
            self.edge(nid, self.trace_estimates(prov["estimates"], path, expected), "scored")
            self.edge(nid, self.trace_references(prov["references"], path, expected), "against")
            self.edge(nid, self.commit(prov["code"]), "scored with code")
            if prov.get("manifest"):
                self.edge(nid, self.dataset(prov["manifest"]["manifest_hash"], path), "references from")
        except (KeyError, TypeError, ValueError) as exc:
            self.malformed(nid, path, exc)
            return nid
        if self.rescore:
            self.rescore_score(nid, path, doc, prov)
        return nid

    def trace_estimates(self, record: dict, recorded_in, expected=None) -> str:
        folder = Path(record["folder"])
        nid = self.node(f"estimates:{folder}", folder=str(folder))
        self.expect_place(nid, folder, "folder", expected, f"estimates folder {folder}")
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
        try:
            trace = self.trace_blend if "components" in doc else self.trace_separation
            producer = trace(prov["path"], doc, expected)
        except (KeyError, TypeError) as exc:
            self.malformed(nid, prov["path"], exc)
            return nid
        self.edge(nid, producer, "produced by")
        return nid

    def trace_separation(self, path, doc: dict, expected=None) -> str:
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
        self.expect_place(nid, mixture["path"], "file", expected, f"the mixture {mixture['path']}")
        self.edge(nid, self.data_file(mixture["path"], mixture["sha256"], "mixture", path), "separated from")
        self.edge(nid, self.commit(doc.get("code")), "separated with code")
        if self.reseparate > 0 and self.nodes[cid]["status"] == "ok":
            self.reseparate -= 1
            self.reseparate_check(nid, path, doc)
        return nid

    def trace_blend(self, path, doc: dict, expected=None) -> str:
        from ..blend.weights import PAPER_WEIGHTS

        if f"blend:{path}" in self.nodes:
            return f"blend:{path}"
        weights = doc["weights"]
        nid = self.node(f"blend:{path}", path=str(path), system=doc.get("system"),
                        weights=weights["table"], versions=doc.get("versions"))
        if expected and (doc.get("subset"), doc.get("track")) != expected:
            self.problem(nid, path, f"blends {doc.get('subset')}/{doc.get('track')}, the score is of "
                         f"{expected[0]}/{expected[1]}", "/".join(expected), f"{doc.get('subset')}/{doc.get('track')}")
        wid = self.node(f"weights:{weights['path']}", path=weights["path"], sha256=weights["sha256"])
        if weights["path"] == "paper":
            published = {m: {s: PAPER_WEIGHTS[m][s] for s in row} for m, row in weights["table"].items()
                         if m in PAPER_WEIGHTS}
            if published != weights["table"]:
                self.problem(wid, path, f"weights {weights['table']} are not the published {PAPER_WEIGHTS}")
        else:
            if self.verify(wid, weights["path"], weights["sha256"], "blend weights", path):
                self.trace_weights(wid, weights["path"], sorted(doc["components"]))
        self.edge(nid, wid, "weights")
        for model, component in doc["components"].items():
            self.edge(nid, self.trace_estimates(component, path, expected), f"component {model}")
        self.edge(nid, self.commit(doc.get("code")), "blended with code")
        if self.reseparate > 0:
            self.reblend_check(nid, path, doc)
        return nid

    def trace_weights(self, wid: str, path, models: list[str]) -> None:
        """Searched weights -> the statistics files they were searched on -> each file's estimates
        (the blended systems' separations of the search tracks) and references."""
        import yaml

        from ..blend.stats import read_stats_provenance
        from ..errors import DataError

        if self.nodes[wid].get("traced"):
            return
        self.nodes[wid]["traced"] = True
        try:
            doc = yaml.safe_load(self.resolve(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            self.problem(wid, path, f"unreadable ({exc})")
            return
        if "models" in doc and sorted(doc["models"] or []) != models:
            self.problem(wid, path, "the weights were searched for other systems than the blend's "
                         "components", models, sorted(doc.get("models") or []))
        if not doc.get("statistics"):
            self.warnings.append(f"{path}: names no statistics files (searched from the wav files "
                                 "directly), so the search's inputs are not traced")
            return
        for track, entry in doc["statistics"].items():
            sid = self.node(f"stats:{entry['path']}", path=entry["path"], sha256=entry["sha256"])
            self.edge(wid, sid, f"searched on {track}")
            if not self.verify(sid, entry["path"], entry["sha256"], "blend statistics", path):
                continue
            try:
                record = read_stats_provenance(self.resolve(entry["path"]))
                expected = (record["subset"], record["track"])
                if record["track"] != track or sorted(record["estimates"]) != models:
                    self.problem(sid, entry["path"], f"{path} lists it for {track} of {models}",
                                 f"{track} {models}", f"{record['track']} {sorted(record['estimates'])}")
                for model, estimates in record["estimates"].items():
                    self.edge(sid, self.trace_estimates(estimates, entry["path"], expected), f"estimates of {model}")
                self.edge(sid, self.trace_references(record["references"], entry["path"], expected), "references")
                self.edge(sid, self.commit(record.get("code")), "computed with code")
            except DataError as exc:
                self.problem(sid, entry["path"], str(exc))
            except (KeyError, TypeError) as exc:
                self.malformed(sid, entry["path"], exc)

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

        try:
            record = torch.load(found, map_location="cpu", weights_only=True, mmap=True)
            self.node(nid, system=record.get("system"), model=record.get("model"), seed=record.get("seed"),
                      created_utc=record.get("created_utc"), versions=record.get("versions"),
                      scores=record.get("scores"), code=record.get("code"),
                      training={k: v for k, v in record.get("training", {}).items() if k != "history"})
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
            self.malformed(nid, found, exc)
            return nid
        if record.get("source"):  # an imported or released file: its chain ends at the download
            source = record["source"]
            relation = "runs as it is" if source.get("run_as_is") else "imported from"
            self.node(nid, source={k: v for k, v in source.items() if k not in ("mapping", "notes")})
            self.edge(nid, self.published_file(source, found), relation)
            self.edge(nid, self.commit(record.get("code")), "imported with code")
            return nid
        config = record.get("train_config")
        self.edge(nid, self.node(f"config:{canonical_hash(config)}", config=config), "trained with config")
        self.nodes[nid]["manifest_hash"] = record.get("data", {}).get("manifest_hash")
        self.edge(nid, self.dataset(self.nodes[nid]["manifest_hash"], found), "trained on")
        self.edge(nid, self.commit(record.get("code")), "trained with code")
        for run in record.get("training", {}).get("runs", [])[1:]:
            if run.get("code", {}).get("git_commit") != (record.get("code") or {}).get("git_commit"):
                self.warnings.append(f"{found}: training resumed at step {run.get('step')} with other code "
                                     f"(commit {run.get('code', {}).get('git_commit')})")
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
            elif doc.get("manifest_hash") != self.nodes[checkpoint_id].get("manifest_hash", doc.get("manifest_hash")):
                self.problem(nid, pointer, "records another dataset manifest hash than its checkpoint",
                             self.nodes[checkpoint_id].get("manifest_hash"), doc.get("manifest_hash"))
        self.edge(nid, checkpoint_id, "named")
        return nid
