"""Helpers shared by the benchmarks: run context, synthetic audio, timing, result files.

The benchmarks are scripts (run as `.venv/bin/python benchmarks/bench_x.py`), so this module is
imported as `common` from the benchmarks folder, which Python puts first on sys.path.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dannasep.constants import SOURCES
from dannasep.io import write_json, write_text

OUT_DIR = Path(__file__).resolve().parent / "out"
INT16_SCALE = 32768.0


def run_context(threads: int | None = None, device: str = "cpu") -> dict:
    """What the figures depend on: date, machine, load, versions, threads, device."""
    import torch

    context = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # other processes share the CPUs: the 1-minute load average when the run started
        "load_average_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        context["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return context


def finish_context(context: dict) -> dict:
    """Record the load average at the end of the run next to the one at its start."""
    context["load_average_end"] = round(os.getloadavg()[0], 2)
    return context


def context_line(context: dict) -> str:
    """One Markdown line describing the run."""
    gpu = f", GPU {context['gpu']}" if "gpu" in context else ""
    return (f"{context['date']}, {context['cpu_count']} CPUs ({context['machine']}), "
            f"{context['threads']} torch thread(s), device {context['device']}{gpu}, "
            f"1-min load average {context['load_average_start']} -> "
            f"{context.get('load_average_end', '?')}, python {context['python']}, "
            f"torch {context['torch']}, numpy {context['numpy']}.")


def synthetic_stems(seconds: float, seed: int = 0, name: str = "Al James - Schoolboy Facination",
                    subset: str = "test") -> dict[str, np.ndarray]:
    """A synthetic MUSDB-like track as float32 [samples, 2] in [-1, 1): stems and mixture."""
    from dannasep.data.synth import synthesize_track

    stems = synthesize_track(seed, subset, name, seconds)
    return {stem: audio.astype(np.float32) / INT16_SCALE for stem, audio in stems.items()}


def stack_sources(stems: dict[str, np.ndarray]) -> np.ndarray:
    """source -> [samples, channels] as one float32 array [sources, samples, channels]."""
    return np.stack([stems[s] for s in SOURCES])


def best_time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest of `repeats` wall-clock timings of `function()` (seconds) and its last result.

    The minimum is the least disturbed by other processes on shared cores.
    """
    best, result = float("inf"), None
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def _proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (e.g. VmHWM, VmRSS) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    VmHWM belongs to the process's own address space. getrusage's ru_maxrss is the fallback
    only: Linux carries it across fork + exec, so a subprocess started by a big parent reports
    the parent's peak.
    """
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Current resident memory of this process, MiB (NaN where /proc is unavailable)."""
    rss = _proc_status_mib("VmRSS")
    return rss if rss is not None else float("nan")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                   right_align: Sequence[bool] | None = None) -> list[str]:
    """Lines of a Markdown table; cells are str()-ed as given (format numbers beforehand)."""
    right_align = right_align if right_align is not None else [True] * len(headers)
    rule = ["-" * max(len(h) - 1, 1) + (":" if r else "-") for h, r in zip(headers, right_align)]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def save_results(out_dir: Path, name: str, result: dict, markdown: str) -> None:
    """Write `<out_dir>/<name>.json` and `.md` atomically and say where."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{name}.json", result)
    write_text(out_dir / f"{name}.md", markdown)
    print(f"wrote {out_dir / (name + '.json')} and {out_dir / (name + '.md')}")
