"""Facts about the running code: git commit, uncommitted changes, package versions.

Recorded in every artefact. `code_state` is read once a process, first thing (`dannasep`'s
entry point calls it before the command runs), so a `git pull` during a days-long training does
not pass for the code that ran; the trainer also records it at every resume.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "numpy", "soundfile", "musdb", "museval", "pandas", "snakemake", "dannasep")
REPO_ROOT = Path(__file__).resolve().parents[3]


UNKNOWN = {"git_commit": None, "git_dirty": None, "untracked_files": None, "diff_sha256": None}


@functools.lru_cache(maxsize=1)
def code_state() -> dict:
    """The checkout's commit; whether it differs from it (changed or untracked files); how many
    untracked files it holds; and the sha256 of its changes (`git diff HEAD --binary` followed by
    every untracked file's path and content), so two runs on the same dirty tree can be told
    apart from runs on different edits."""
    import hashlib

    def git(*args, text=True):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                              text=text, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return dict(UNKNOWN)
        diff = git("diff", "HEAD", "--binary", text=False).stdout
        untracked = [f for f in git("ls-files", "--others", "--exclude-standard", "-z").stdout.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        return dict(UNKNOWN)
    digest = hashlib.sha256(diff)
    for name in sorted(untracked):
        digest.update(b"\0untracked\0" + name.encode())
        try:
            digest.update((REPO_ROOT / name).read_bytes())
        except OSError:
            pass
    dirty = bool(diff) or bool(untracked)
    return {"git_commit": head.stdout.strip(), "git_dirty": dirty, "untracked_files": len(untracked),
            "diff_sha256": digest.hexdigest() if dirty else None}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
