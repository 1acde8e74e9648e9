"""What each step records about its inputs and outputs (sha256 of every file, as read or written).

  train     the checkpoint itself: train config, seed, dataset manifest hash, commit, versions
  separate  <estimates>/provenance.json: checkpoint path + sha256, mixture, settings, estimates
  blend     <estimates>/provenance.json (`blend_record`): weights file (or "paper") and table, and
            for each component model its estimate files read and its provenance.json
  evaluate  the score JSON's "provenance" (`score_record`): estimates as scored, their
            provenance.json, the references, the manifest hash, mode, commit, versions

`dannasep.provenance.graph` follows these records back and re-checks every hash.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ..constants import SOURCES
from ..errors import DataError
from ..io import file_identity, sha256_file

SCORE_FORMAT = "dannasep-score-provenance/1"


def file_record(path: str | os.PathLike) -> dict | None:
    """{"path", "sha256"} of an existing file, else None."""
    return {"path": str(path), "sha256": sha256_file(path)} if Path(path).is_file() else None


def written_record(paths) -> dict:
    """The "estimates" (name -> sha256) and "written" (name -> `file_identity`) entries of a
    provenance.json, taken right after the files were written."""
    paths = [Path(p) for p in paths]
    return {"estimates": {p.name: sha256_file(p) for p in paths},
            "written": {p.name: file_identity(p) for p in paths}}


def _unchanged_since_written(folder: Path) -> dict[str, str]:
    """sha256 that the folder's provenance.json recorded for files whose size, time and inode are
    still those it recorded: reading 1 GB of estimates again to hash them was a third of a blend
    statistics job. The audit never takes these shortcuts: it hashes every file."""
    try:
        prov = json.loads((folder / "provenance.json").read_text())
        written, hashes = prov.get("written") or {}, prov.get("estimates") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    known = {}
    for name, identity in written.items() if isinstance(written, dict) else ():
        try:
            if identity == file_identity(folder / name) and isinstance(hashes.get(name), str):
                known[name] = hashes[name]
        except OSError:
            pass
    return known


def estimates_record(folder: str | os.PathLike, names) -> dict:
    """The estimate files `names` of `folder` with their sha256, and the folder's provenance.json."""
    folder = Path(folder)
    for name in names:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: missing; run the separation (or blend) step for this track first")
    known = _unchanged_since_written(folder)
    return {"folder": str(folder),
            "files": {name: known.get(name) or sha256_file(folder / name) for name in names},
            "provenance": file_record(folder / "provenance.json")}


def references_record(path: str | os.PathLike) -> dict:
    """A reference track folder (<source>.wav) or .stem.mp4 file: {"path", "files": {path: sha}}."""
    path = Path(path)
    files = [path / f"{s}.wav" for s in SOURCES] if path.is_dir() else [path]
    return {"path": str(path), "files": {str(f): sha256_file(f) for f in files}}


def score_record(*, track: str, estimates: Path, references: Path, mode: str, nsdr: bool,
                 manifest: Path | None = None) -> dict:
    """The "provenance" entry of a score JSON (hash the estimates before reading them)."""
    from .code_state import code_state, package_versions

    manifest_hash = None
    if manifest:
        try:
            manifest_hash = json.loads(Path(manifest).read_text())["manifest_hash"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{manifest}: not a dataset manifest ({exc}); "
                            "write it with `dannasep validate --manifest`") from None
    return {
        "format": SCORE_FORMAT,
        "track": track,
        "estimates": estimates_record(estimates, [f"{s}.wav" for s in SOURCES]),
        "references": references_record(references),
        "manifest": {"path": str(manifest), "manifest_hash": manifest_hash} if manifest else None,
        "mode": mode, "nsdr": nsdr, "window_seconds": 1.0, "hop_seconds": 1.0,
        "code": code_state(), "versions": package_versions(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def blend_record(*, system: str, subset: str, track: str, weights, table: dict, components: dict,
                 written: Path, sources=SOURCES) -> dict:
    """provenance.json of blended estimates; `written`: the folder holding the new <source>.wav."""
    from .code_state import code_state, package_versions

    paper = str(weights) == "paper"
    return {"kind": "blend", "system": system, "subset": subset, "track": track,
            "weights": {"path": "paper" if paper else str(weights),
                        "sha256": None if paper else sha256_file(weights), "table": table},
            "components": components,
            **written_record(Path(written) / f"{s}.wav" for s in sources),
            "code": code_state(), "versions": package_versions()}
