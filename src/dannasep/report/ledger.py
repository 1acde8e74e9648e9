"""The settings ledger (config/ledger.yaml): the authors' value of every setting beside a config's.

    python -m dannasep.report.ledger [--config config/paper.yaml] [--markdown]

A row is `same` when the config's value is the authors' (for a mapping: every key the authors
fix), else the recorded reason; a difference without a reason, or a reason where the values
agree, is a problem (`problems`), which tests/test_ledger.py turns into a failure for
config/paper.yaml.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import yaml

from ..config import REPO_ROOT, effective_config
from ..errors import ConfigError

LEDGER = REPO_ROOT / "config" / "ledger.yaml"
PAPER_CONFIG = "config/paper.yaml"
_MISSING = object()


def load_ledger(path: Path = LEDGER) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the settings ledger ({exc})") from None


def lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def agrees(authors, ours) -> bool:
    """Equal, numbers compared as numbers, a mapping on the keys the authors fix."""
    if isinstance(authors, dict):
        return isinstance(ours, dict) and all(agrees(v, ours.get(k, _MISSING)) for k, v in authors.items())
    if isinstance(authors, list):
        return isinstance(ours, list) and len(authors) == len(ours) and all(map(agrees, authors, ours))
    if isinstance(authors, bool) or isinstance(ours, bool):
        return authors is ours
    if isinstance(authors, (int, float)) and isinstance(ours, (int, float)):
        return math.isclose(authors, ours, rel_tol=1e-12, abs_tol=0)
    return authors == ours


def _entries(ledger: dict, systems):
    for entry in ledger.get("run", []):
        yield "(run)", entry
    for system, entries in ledger["systems"].items():
        if systems is None or system in systems:
            for entry in entries:
                yield system, entry


def rows(config: dict, ledger: dict | None = None) -> list[dict]:
    """One row per ledger entry for the systems `config` has."""
    ledger = ledger or load_ledger()
    out = []
    for system, entry in _entries(ledger, set(config.get("models", {}))):
        key = entry.get("key")
        value = lookup(config, key) if key else entry.get("ours", _MISSING)
        same = key is not None and value is not _MISSING and agrees(entry["authors"], value)
        out.append({
            "system": system, "setting": entry["setting"], "key": key,
            "authors": entry["authors"], "source": entry["source"],
            "config": None if value is _MISSING else value,
            "status": "same" if same else entry.get("differs") or "DIFFERS WITHOUT A REASON",
            "problem": _problem(entry, key, value, same),
        })
    return out


def _problem(entry, key, value, same) -> str | None:
    if key is not None and value is _MISSING:
        return f"{key}: no such setting in the config"
    if not same and not entry.get("differs"):
        return f"{key or entry['setting']}: {value!r} differs from the authors' {entry['authors']!r} without a reason"
    if same and entry.get("differs"):
        return f"{key}: a difference is recorded, but the value is the authors' ({value!r})"
    return None


def problems(config: dict, ledger: dict | None = None) -> list[str]:
    return [r["problem"] for r in rows(config, ledger) if r["problem"]]


def _cell(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip() if not isinstance(value, str) else value
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(table: list[dict]) -> str:
    lines = ["| system | setting | authors | source | config/paper.yaml | status |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append("| " + " | ".join(_cell(x) for x in (r["system"], r["setting"], r["authors"], r["source"],
                                                            r["config"], r["status"])) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dannasep.report.ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=PAPER_CONFIG,
                        help="config merged over config/config.yaml, as Snakemake runs it (default: the paper's)")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown table")
    args = parser.parse_args(argv)
    table = rows(effective_config([args.config]))
    if args.markdown:
        print(markdown(table), end="")
    bad = [r["problem"] for r in table if r["problem"]]
    for line in bad:
        print(f"ledger: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())


def ledger_frame(run_config: dict | None = None):
    """The ledger as a table: the paper config's value and status, and this run's value."""
    import pandas as pd

    paper = rows(effective_config([PAPER_CONFIG]))
    frame = pd.DataFrame([{"system": r["system"], "setting": r["setting"], "authors": _cell(r["authors"]),
                           "source": r["source"], "config/paper.yaml": _cell(r["config"]),
                           "status": r["status"]} for r in paper])
    if run_config is not None:
        values = []
        for r in paper:
            value = lookup(run_config, r["key"]) if r["key"] else _MISSING
            values.append("" if value is _MISSING else _cell(value))
        frame.insert(5, "this run", values)
    return frame
