"""Checks that recompute instead of only comparing hashes: a score's SDR from the audio on disk
(cheap, on by default), a separation by running its recorded checkpoint again (`--reseparate N`),
a blend from its components, and the score files the report's tables were computed from."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DannasepError

SDR_TOLERANCE_DB = 1e-4  # museval's JSON keeps 1e-5 dB
RESEPARATE_RTOL = 1e-4  # relative L2 difference allowed between recorded and recomputed estimates


def relative_difference(recorded: np.ndarray, fresh: np.ndarray) -> float:
    if recorded.shape != fresh.shape:
        return float("inf")
    return float(np.linalg.norm(recorded - fresh) / max(np.linalg.norm(recorded), 1e-12))


class ChecksMixin:
    def rescore_score(self, nid: str, path, doc: dict, prov: dict) -> None:
        """Recompute the framewise SDR from the files on disk and compare with the score file."""
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
            old = np.array([np.nan if v is None else v for v in recorded.get(target["name"], [])], dtype=float)
            new = np.array([f["metrics"]["SDR"] for f in target["frames"]], dtype=float)
            if old.shape != new.shape or not np.allclose(old, new, atol=SDR_TOLERANCE_DB, rtol=0, equal_nan=True):
                self.problem(nid, path, f"{target['name']} SDR frames differ from a recomputation on the "
                             f"files now on disk: the score file was edited, or scored other audio",
                             new.tolist(), old.tolist())
        self.nodes[nid]["rescored"] = True

    def reseparate_check(self, nid: str, path, doc: dict) -> None:
        """Run the recorded checkpoint on the recorded mixture with the recorded settings (CPU) and
        compare with the estimates the record says it wrote."""
        from ..audio import read_wav
        from ..checkpoint import load_model
        from ..separation.files import separate_file

        record_path = self.resolve(path)
        ckpt = self.locate_checkpoint(doc["checkpoint"]["path"], doc["checkpoint"]["sha256"])
        with tempfile.TemporaryDirectory(prefix="dannasep-reseparate-") as tmp:
            try:
                model = load_model(ckpt, "cpu")
                separate_file(model, self.resolve(doc["mixture"]["path"]), Path(tmp), doc["separation"], device="cpu")
            except (DannasepError, RuntimeError, ValueError, KeyError) as exc:
                self.problem(nid, path, f"cannot separate again with the recorded checkpoint: {exc}")
                return
            worst = 0.0
            for name in doc["estimates"]:
                recorded = read_wav(record_path.parent / name)[0]
                fresh = read_wav(Path(tmp) / name)[0]
                worst = max(worst, relative_difference(recorded, fresh))
        self.nodes[nid]["reseparated"] = {"relative_difference": worst}
        if worst > RESEPARATE_RTOL:
            self.problem(nid, path, f"separating {doc['mixture']['path']} again with the recorded checkpoint "
                         f"gives other estimates (relative difference {worst:.3g}): the records do not "
                         "describe how these estimates were made", f"<= {RESEPARATE_RTOL}", worst)

    def reblend_check(self, nid: str, path, doc: dict) -> None:
        """Blend the recorded components with the recorded weights and compare with the blend."""
        from ..audio import read_wav

        folder = self.resolve(path).parent
        table = doc["weights"]["table"]
        worst = 0.0
        for name in doc["estimates"]:
            source = name.removesuffix(".wav")
            fresh = sum(table[m][source] * read_wav(self.resolve(c["folder"]) / name)[0].astype(np.float64)
                        for m, c in doc["components"].items() if table[m][source] != 0)
            worst = max(worst, relative_difference(read_wav(folder / name)[0].astype(np.float64),
                                                   np.asarray(fresh)))
        self.nodes[nid]["reblended"] = {"relative_difference": worst}
        if worst > 1e-6:
            self.problem(nid, path, f"the recorded components and weights do not give these estimates "
                         f"(relative difference {worst:.3g})", "<= 1e-6", worst)

    def check_table_inputs(self) -> None:
        """results/tables/inputs.json lists the score files (and sha256) the tables were made from."""
        path = self.results / "tables" / "inputs.json"
        if not path.is_file():
            return
        nid = self.node(f"table:{path}", path=str(path))
        try:
            recorded = json.loads(path.read_text())["scores"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.malformed(nid, path, exc)
            return
        for score, sha in recorded.items():
            if self.hash(score) != sha:
                self.problem(nid, score, "the report's tables were computed from another version of this "
                             "score file; rebuild them (snakemake tables)", sha, self.hash(score))
