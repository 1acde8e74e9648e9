"""Write the configuration a Snakemake run of this workflow uses, as one file.

    python workflow/scripts/effective_config.py OUT [CONFIGFILE ...]

config/config.yaml (the Snakefile's `configfile:`), then each CONFIGFILE merged on top of it key
by key (what `snakemake --configfile CONFIGFILE ...` does), validated with every schema default
filled in (what workflow/rules/common.smk does). dvc.yaml's stages read their `params:` from OUT,
so DVC reruns a phase exactly when a setting it uses changes, whichever file set it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from snakemake.utils import update_config

from dannasep.config import validate_config
from dannasep.errors import ConfigError, DannasepError
from dannasep.io import write_yaml

BASE_CONFIG = "config/config.yaml"


def effective_config(configfiles: list[str]) -> dict:
    """The validated merge of config/config.yaml and `configfiles`, in order."""
    merged: dict = {}
    for name in [BASE_CONFIG, *configfiles]:
        path = Path(name)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found; give a path relative to the "
                              "repository root (see params.yaml)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of settings")
        update_config(merged, loaded)
    return validate_config(merged, source=" + ".join([BASE_CONFIG, *configfiles]))


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
