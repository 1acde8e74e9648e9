"""`dannasep audit`: trace a table number back to its checkpoint, config, data and commit.

    dannasep audit results/scores/xumx/test/<track>.json     one score file's chain
    dannasep audit xumx [drums]                              a table row (or cell) and its chains
    dannasep audit --systems xumx unet ... --out results/provenance.json    the whole table

Every file on the way is re-hashed and compared with the sha256 its record holds; any mismatch
is listed (file, expected, actual) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..constants import SOURCES, SUBSETS
from ..errors import DannasepError

CELL_SOURCES = SOURCES + ("avg",)
HASH_IDS = ("checkpoint", "config", "dataset", "commit", "download")  # node kinds whose id is a hash


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", help="a score JSON file, or a system name (xumx, dannasep, ...)")
    p.add_argument("source", nargs="?", help=f"with a system: one of {', '.join(CELL_SOURCES)} (default all)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default results)")
    p.add_argument("--folder", choices=SUBSETS, default="test", help="subset the scores are of (default test)")
    p.add_argument("--tracks", nargs="+", metavar="TRACK", help="only these tracks (default every score file)")
    p.add_argument("--systems", nargs="+", metavar="SYSTEM", help="several systems: the paper table")
    p.add_argument("--out", type=Path, help="also write the graph as JSON (e.g. results/provenance.json)")
    p.add_argument("--no-rescore", dest="rescore", action="store_false",
                   help="skip recomputing every score's SDR frames from the audio (on by default: milliseconds "
                        "a track with the exact fast SDR)")
    p.add_argument("--reseparate", type=int, default=0, metavar="N",
                   help="also separate N tracks again with their recorded checkpoint (CPU) and compare with the "
                        "recorded estimates (and re-blend blends): catches records edited consistently")
    p.add_argument("--json", action="store_true", help="print the graph as JSON instead of the chain")


def _graph(args) -> dict:
    from .graph import Tracer, build_graph, trace_score_file

    if args.systems:
        if args.target:
            raise DannasepError("give either a target or --systems, not both")
        return build_graph(args.results, args.systems, args.folder, args.tracks, rescore=args.rescore,
                           reseparate=args.reseparate)
    if not args.target:
        raise DannasepError("name a score file or a system, e.g. `dannasep audit xumx` (see --help)")
    if args.target.endswith(".json") or Path(args.target).is_file():
        if not Path(args.target).is_file():
            raise DannasepError(f"{args.target}: no such score file; run `dannasep evaluate` first")
        if args.source:
            raise DannasepError("a score file holds every source; give no source after it")
        return trace_score_file(args.target, args.results, rescore=args.rescore, reseparate=args.reseparate)
    if args.source and args.source not in CELL_SOURCES:
        raise DannasepError(f"unknown source {args.source!r}; use one of {', '.join(CELL_SOURCES)}")
    tracer = Tracer(args.results, rescore=args.rescore, reseparate=args.reseparate)
    single = args.source in SOURCES
    tracer.add_system(args.target, args.folder, args.tracks, sources=(args.source,) if single else SOURCES)
    tracer.check_table_inputs()
    return tracer.graph(systems=[args.target], folder=args.folder, source=args.source)


# ---------------------------------------------------------------------------------------------
# Text rendering of the graph
# ---------------------------------------------------------------------------------------------

def _short(sha) -> str:
    return sha[:12] if isinstance(sha, str) else str(sha)


def _compact(obj, limit: int = 110) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(nid: str, node: dict) -> list[str]:
    """Header line and detail lines of one node."""
    kind = node["kind"]
    if kind == "score":
        sdr = " ".join(f"{k} {v:.3f}" for k, v in node.get("sdr", {}).items() if v is not None)
        return [f"score {node['path']} (sha256 {_short(node.get('sha256'))}, mode {node.get('mode')})",
                f"median SDR over frames (dB): {sdr}"]
    if kind == "estimates":
        files = ", ".join(f"{k} {_short(v)}" for k, v in node.get("files", {}).items())
        return [f"estimates {node['folder']}", f"files: {files}"]
    if kind == "separation":
        return [f"separation {node['path']} (system {node.get('system')})",
                f"settings: {_compact(node.get('settings'))}"]
    if kind == "blend":
        return [f"blend {node['path']} (system {node.get('system')})", f"weights: {_compact(node.get('weights'), 200)}"]
    if kind == "weights":
        return [f"weights {node['path']}" + (f" sha256 {node['sha256']}" if node.get("sha256") else "")]
    if kind == "stats":
        return [f"blend statistics {node['path']} sha256 {_short(node.get('sha256'))}"]
    if kind == "checkpoint":
        model = node.get("model") or {}
        lines = [f"checkpoint {node['path']} sha256 {node['sha256']}"]
        if model and node.get("source"):
            lines += [f"model {model.get('name')} {_compact(model.get('kwargs'))}",
                      f"from a published file, not trained: {_compact(node['source'], 200)}"]
        elif model:
            lines += [f"model {model.get('name')} {_compact(model.get('kwargs'))}",
                      f"seed {node.get('seed')}, created {node.get('created_utc')}, "
                      f"training {_compact(node.get('training'))}",
                      f"versions {_compact(node.get('versions'), 200)}"]
        return lines
    if kind == "download":
        return [f"published file {node.get('weights_kind')} {node.get('url')}",
                f"sha256 {node.get('sha256')}, {node.get('bytes')} bytes, at {node.get('path')}"]
    if kind == "pointer":
        return [f"pointer {node['path']} -> {node.get('names')} (sha256 {_short(node.get('sha256'))})"]
    if kind == "config":
        return [f"train config {nid.split(':', 1)[1][:12]}: {_compact(node.get('config'), 200)}"]
    if kind == "dataset":
        return [f"dataset manifest_hash {node.get('manifest_hash')} (checked against {node.get('manifest')})"]
    if kind == "file":
        listed = node.get("in_manifest") or "not in the dataset manifest"
        return [f"{node.get('role')} {node['path']} sha256 {_short(node.get('sha256'))} (manifest: {listed})"]
    if kind == "references":
        return [f"references {node['path']}"]
    if kind == "commit":
        notes = ["in this repository" if node.get("in_repository") else "not in this repository"]
        if node.get("dirty"):
            diffs = ", ".join(str(d)[:12] for d in node.get("diff_sha256", []))
            notes.append(f"some steps had uncommitted changes, diff sha256 {diffs}")
        return [f"commit {node.get('git_commit')} ({', '.join(notes)})"]
    if kind == "table":
        return [f"tables computed from the score files listed in {node['path']}"]
    if kind == "cell":
        value = "n/a" if node.get("value") is None else f"{node['value']:.3f} dB"
        return [f"{node['system']} {node['source']}: SDR {value}, {node.get('aggregation')}"]
    return [nid]


def render(graph: dict) -> str:
    nodes = graph["nodes"]
    children: dict[str, list[tuple[str, str]]] = {}
    for e in graph["edges"]:
        children.setdefault(e["from"], []).append((e["relation"], e["to"]))
    lines, shown = [], set()

    def walk(nid: str, relation: str, depth: int) -> None:
        node = nodes[nid]
        head, *details = describe(nid, node)
        mark = "MISMATCH" if node["status"] != "ok" else "ok"
        pad = "  " * depth
        prefix = f"{relation}: " if relation else ""
        if nid in shown:
            kind, key = nid.split(":", 1)
            lines.append(f"{pad}{prefix}{kind} {_short(key) if kind in HASH_IDS else key} (see above)")
            return
        shown.add(nid)
        lines.append(f"{pad}{prefix}{head} [{mark}]")
        lines.extend(f"{pad}    {d}" for d in details)
        for rel, child in children.get(nid, []):
            walk(child, rel, depth + 1)

    cells = [n for n, v in nodes.items() if v["kind"] == "cell"]
    for cid in cells:
        lines.append(describe(cid, nodes[cid])[0] + ("" if nodes[cid]["status"] == "ok" else " [MISMATCH]"))
    scores = [to for cid in cells for rel, to in children.get(cid, []) if to.startswith("score:")]
    roots = list(dict.fromkeys(scores)) if cells else [n for n in nodes if n.startswith("score:")]
    for root in roots:
        lines.append("")
        walk(root, "", 0)
    if graph["warnings"]:
        lines += ["", "warnings:"] + [f"  {w}" for w in graph["warnings"]]
    lines.append("")
    lines += problem_lines(graph) or ["every hash verified: OK"]
    return "\n".join(lines)


def problem_lines(graph: dict) -> list[str]:
    out = [f"{len(graph['problems'])} problem(s):"] if graph["problems"] else []
    for p in graph["problems"]:
        out.append(f"  {p['file']}: {p['message']}")
        if p["expected"] is not None or p["actual"] is not None:
            out.append(f"    expected {p['expected']}")
            out.append(f"    actual   {p['actual'] if p['actual'] is not None else '(missing)'}")
    return out


def run(args) -> int:
    from .graph import write_graph

    graph = _graph(args)
    if args.out:
        write_graph(graph, args.out)
    print(json.dumps(graph, indent=2) if args.json else render(graph))
    if graph["problems"]:
        print("\n".join(["dannasep audit: provenance check failed"] + problem_lines(graph)), file=sys.stderr)
        return 1
    return 0
