"""Which source files a pipeline step runs: the import closure of its entry modules.

DVC reruns a stage when one of its deps changes, and deletes its outputs first; with every stage
depending on all of src/dannasep, editing a figure caption would retrain every model. So each
stage depends on the code it runs, and nothing else. `workflow/stage_code.yaml` declares, per
stage, the entry modules (the `dannasep` commands its rules call) and the workflow files; this
module expands the modules to every dannasep module they import, at module level or inside a
function (static analysis: nothing is imported or run). `workflow/scripts/dvc_yaml.py` writes the
result into dvc.yaml, and the training rules take the same files as Snakemake inputs, so both
tools retrain exactly the systems whose code changed.

Model classes are looked up by name at run time (dannasep.models registry), so a training stage
depends on its own architecture's module only: the declaration names it per architecture.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

import yaml

from ..errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
SRC = REPO_ROOT / "src"
PACKAGE = "dannasep"
DECLARATION = REPO_ROOT / "workflow" / "stage_code.yaml"
# Import statements of each module, by the sha1 of its text: parsing ~50 modules took 0.1 s of
# every parse of the workflow (planning, and each SLURM job); reading and hashing them, 3 ms.
STATEMENTS_CACHE = REPO_ROOT / ".snakemake" / "dannasep" / "import-statements.json"
_CACHE_ENTRIES = 2000  # the oldest go first; a few edits a module's worth


def module_file(name: str, src: Path = SRC) -> Path | None:
    """The file of dotted module `name` under `src` (a module or a package), or None."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parse_statements(text: str, filename: str) -> list[list]:
    """[level, module, names] of every import statement in `text` (anywhere in the file):
    level None for `import a, b.c` (names: the modules), else `from` with its dots and module."""
    statements = []
    for node in ast.walk(ast.parse(text, filename)):
        if isinstance(node, ast.Import):
            statements.append([None, None, [a.name for a in node.names]])
        elif isinstance(node, ast.ImportFrom):
            statements.append([node.level, node.module, [a.name for a in node.names]])
    return statements


class _StatementsCache:
    """The parsed import statements of module texts, kept across processes in STATEMENTS_CACHE.

    Keyed by content, so an edit (or another checkout) is never served an old answer; a missing,
    unreadable or unwritable cache file only means parsing again.
    """

    def __init__(self, path: Path):
        self.path, self.entries, self.changed = path, None, False

    def statements(self, path: Path) -> list[list]:
        if self.entries is None:
            try:
                self.entries = dict(json.loads(self.path.read_text()))
            except (OSError, ValueError, TypeError):
                self.entries = {}
        text = path.read_bytes()
        key = hashlib.sha1(text).hexdigest()
        if key not in self.entries:
            self.entries[key] = _parse_statements(text.decode(), str(path))
            self.changed = True
        return self.entries[key]

    def save(self) -> None:
        if not self.changed:
            return
        from ..io import write_text

        kept = list(self.entries.items())[-_CACHE_ENTRIES:]
        try:
            write_text(self.path, json.dumps(kept))
        except OSError:
            pass  # a read-only checkout: parse again next time
        self.changed = False


_STATEMENTS = _StatementsCache(STATEMENTS_CACHE)


@functools.lru_cache(maxsize=None)
def _imported(path: Path, src: Path) -> frozenset[str]:
    """Dotted names of the dannasep modules `path` imports (anywhere in the file); once a process
    (the workflow asks for every system's closure when it is parsed)."""
    name = _module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for level, module, names in _STATEMENTS.statements(path):
        if level is None:
            found.update(n for n in names if n.split(".")[0] == PACKAGE)
            continue
        if level:
            base = package.split(".")[: len(package.split(".")) - level + 1]
            origin = ".".join(base + ([module] if module else []))
        else:
            origin = module or ""
        if origin.split(".")[0] != PACKAGE:
            continue
        found.add(origin)
        # `from pkg import name`: name may be a submodule (looked up now, not cached: a module
        # added later changes the answer without changing this file)
        found.update(f"{origin}.{n}" for n in names if module_file(f"{origin}.{n}", src) is not None)
    return frozenset(found)


def import_closure(modules, src: Path = SRC) -> set[Path]:
    """Files of `modules`, of every dannasep module they import, and of their packages."""
    todo, seen, files = list(modules), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, src)
        if path is None:
            raise ConfigError(f"{DECLARATION}: no module {name} under {src}; fix the module name")
        files.add(path)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run too
        todo.extend(_imported(path, src))
    _STATEMENTS.save()
    return files


@functools.lru_cache(maxsize=None)
def declaration(path: Path = DECLARATION) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the stage code declaration ({exc})") from None


def stage_code(stage: str, archs=(), inits=(), root: Path = REPO_ROOT,
               with_workflow: bool = True) -> list[str]:
    """Repo-relative files (sorted) that `stage` runs; `archs`/`inits`: the models it builds.

    with_workflow=False: the Python modules of the step itself, without the workflow files and
    what Snakemake imports to parse the workflow (for a rule's inputs).
    """
    decl = declaration()
    if stage not in decl["stages"]:
        raise ConfigError(f"{DECLARATION}: no stage '{stage}' (declared: {', '.join(decl['stages'])})")
    entry = decl["stages"][stage]
    parse = decl["snakemake"] if entry.get("snakemake", True) and with_workflow else {}
    modules = [*parse.get("modules", []), *entry.get("modules", [])]
    for arch in archs:
        if arch not in decl["archs"]:
            raise ConfigError(f"{DECLARATION}: architecture '{arch}' has no entry under archs:; add "
                              "the modules that build it")
        modules += decl["archs"][arch]
    for init in inits:
        modules += decl["inits"][init]
    files = {str(p.relative_to(root)) for p in import_closure(modules, root / "src")}
    if not with_workflow:
        return sorted(files)
    return sorted(files | set(parse.get("files", [])) | set(entry.get("files", [])))


def system_code(config: dict, system: str, with_workflow: bool = True) -> list[str]:
    """The files a training of `system` runs, for its architecture and initialisation.

    with_workflow=False gives the training rule's Snakemake inputs: the Python code only (a
    rule's own code is Snakemake's `code` rerun trigger; the parse-time files are not training).
    """
    cfg = config["models"][system]
    inits = [cfg["init"]] if cfg.get("init") else []
    return stage_code("train", archs=[cfg["arch"]], inits=inits, with_workflow=with_workflow)


def compress(files: list[str], root: Path = REPO_ROOT) -> list[str]:
    """Replace every package folder whose .py files are all listed by the folder itself."""
    listed = set(files)
    result = set(files)
    folders = sorted({str(Path(f).parent) for f in files if f.endswith(".py")}, key=len)
    for folder in folders:
        py = {str(p.relative_to(root)) for p in (root / folder).rglob("*.py")}
        if py and py <= listed and not any(folder.startswith(d + "/") for d in result if d in folders):
            result = {f for f in result if not f.startswith(folder + "/")} | {folder}
    return sorted(result)


def files_hash(files, root: Path = REPO_ROOT) -> str:
    """sha256 over the paths and contents of `files` (repo-relative), in order."""
    import hashlib

    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()
