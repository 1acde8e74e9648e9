"""Jobs in a rule's conda environment (snakemake --sdm conda) find this repository's code.

That environment holds the pinned libraries only (workflow/envs/dannasep.yaml names no path, so
it builds from any --conda-prefix); the code reaches the jobs through PYTHONPATH, and the
`dannasep` command through workflow/bin/dannasep, both set here for the jobs Snakemake starts.
"""

from __future__ import annotations

import os
from pathlib import Path


def expose_repository(repo: str | os.PathLike) -> None:
    repo = Path(repo)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo / "src"), os.environ.get("PYTHONPATH")]))
    os.environ["PATH"] = os.pathsep.join([str(repo / "workflow" / "bin"), os.environ.get("PATH", "")])
