"""Provenance graph and verification: trace every score back to what produced it, re-hashing
every file on the way (what each step records: dannasep.provenance.records).

`Tracer` follows score -> estimates -> separation (or blend -> every component) -> checkpoint
(identified by its content hash) -> train config, dataset manifest, commit (chain.py, data.py),
compares every recorded sha256 with the file on disk now and the track and subset along the
chain, recomputes each score's SDR from the audio, and on request separates again with the
recorded checkpoint (checks.py): a checkpoint replaced after scoring, an estimate or score edited
later, records edited consistently, or a dataset that changed since training is a problem
naming the file.

The graph (`results/provenance.json`): {"format", "ok", "problems", "warnings", "table",
"nodes": {id: {"kind", "status", ...}}, "edges": [{"from", "to", "relation"}]} with ids
cell:<system>/<source> score:<path> estimates:<folder> separation:<path> blend:<path>
checkpoint:<sha256> pointer:<path> config:<sha256> dataset:<manifest hash> file:<path>
references:<path> weights:<path|paper> stats:<path> commit:<sha> table:<path> download:<sha256> (a published
weight file, where the chain of an imported or released checkpoint ends: its URL and sha256).
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

from ..constants import SOURCES
from ..errors import DannasepError
from .chain import ChainMixin, canonical_hash  # noqa: F401  (canonical_hash re-exported)
from .checks import ChecksMixin
from .data import DataMixin
from .tracer import TracerBase

FORMAT = "dannasep-provenance/2"


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None (the graph is strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class Tracer(ChainMixin, DataMixin, ChecksMixin, TracerBase):
    """Builds the provenance graph of score files, verifying every record as it goes."""

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
                       "results": str(self.results), "rescored": self.rescore, **extra, "table": table,
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


def build_graph(results_dir, systems, folder: str = "test", tracks=None, rescore: bool = True,
                reseparate: int = 0) -> dict:
    """The provenance graph of the paper table: cells -> scores -> estimates -> checkpoints -> data,
    config, commit; every hash verified (see `graph["problems"]`)."""
    tracer = Tracer(results_dir, rescore=rescore, reseparate=reseparate)
    for system in systems:
        tracer.add_system(system, folder, tracks)
    tracer.check_table_inputs()
    return tracer.graph(systems=list(systems), folder=folder, tracks=list(tracks) if tracks else None)


def trace_score_file(path, results_dir="results", rescore: bool = True, reseparate: int = 0) -> dict:
    """The provenance graph of one score file."""
    tracer = Tracer(results_dir, rescore=rescore, reseparate=reseparate)
    tracer.trace_score(tracer.local(path))
    return tracer.graph(score=str(path))


def write_graph(graph: dict, path) -> None:
    from ..io import write_json

    write_json(path, graph)
