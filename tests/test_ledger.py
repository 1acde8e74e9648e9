"""The settings ledger (config/ledger.yaml) against config/paper.yaml as Snakemake runs it."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from dannasep.config import effective_config
from dannasep.report.ledger import load_ledger, markdown, problems, rows

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"training tracks", "samples per track", "segment (s)", "gradient accumulation", "epochs",
            "learning rate", "schedule", "precision", "model selection", "random gain",
            "channel swap probability", "sign flip probability"}


def _paper():
    return effective_config(["config/paper.yaml"])


def test_paper_config_matches_the_ledger():
    assert problems(_paper()) == []


def test_a_drift_from_the_authors_is_caught():
    cfg = _paper()
    drifted = copy.deepcopy(cfg)
    drifted["models"]["xumx"]["train"]["lr"] = 0.001
    drifted["models"]["demucs"]["data"]["pitch"]["p"] = 0.0
    found = problems(drifted)
    assert any("models.xumx.train.lr" in p for p in found)
    assert any("models.demucs.data.pitch.p" in p for p in found)
    # a reason kept after the value became the authors' is stale
    stale = copy.deepcopy(cfg)
    stale["evaluation"]["use_musdb18"] = True
    assert any("evaluation.use_musdb18" in p and "recorded" in p for p in problems(stale))


def test_every_paper_system_has_the_required_settings():
    ledger = load_ledger()
    cfg = _paper()
    assert set(ledger["systems"]) >= set(cfg["models"])
    for system, entries in ledger["systems"].items():
        names = {e["setting"] for e in entries}
        batch = {"batch", "batch per GPU"} & names
        assert batch and REQUIRED <= names, (system, sorted(REQUIRED - names))


def test_no_embedded_default_leaks_into_the_paper_run():
    """Every model or data setting config/config.yaml makes, config/paper.yaml makes too: keys it
    leaves out keep the embedded default's (tiny, CPU) values when Snakemake merges the files."""
    def leaves(node, prefix=""):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1]

    default = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    paper_keys = set(leaves(paper))
    allowed = {"seed"}  # the authors fixed no seed
    def covered(key):  # set itself, or a value higher up (e.g. `nets: null`) replaces its subtree
        parts = key.split(".")
        return any(".".join(parts[:n]) in paper_keys for n in range(1, len(parts) + 1))

    leaked = [k for k in leaves({"data": default["data"], "models": default["models"]})
              if not covered(k) and k.rsplit(".", 1)[-1] not in allowed]
    assert not leaked, f"set in config/config.yaml but not in config/paper.yaml: {leaked}"


def test_readme_shows_the_current_ledger():
    readme = (ROOT / "README.md").read_text()
    assert markdown(rows(_paper())) in readme, (
        "README.md's settings ledger is stale: paste `python -m dannasep.report.ledger --markdown`")
