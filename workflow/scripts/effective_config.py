"""Write the configuration a Snakemake run of this workflow uses, as one file.

    python workflow/scripts/effective_config.py OUT [CONFIGFILE ...]

config/config.yaml (the Snakefile's `configfile:`), then each CONFIGFILE merged on top of it key
by key (what `snakemake --configfile CONFIGFILE ...` does), validated with every schema default
filled in (what workflow/rules/common.smk does). dvc.yaml's stages read their `params:` from OUT,
so DVC reruns a phase exactly when a setting it uses changes, whichever file set it.
"""

from __future__ import annotations

import sys

from dannasep.config import effective_config
from dannasep.errors import DannasepError
from dannasep.io import write_yaml


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        write_yaml(argv[0], effective_config(argv[1:]))
    except DannasepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
