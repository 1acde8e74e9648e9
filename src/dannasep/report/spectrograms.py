"""`dannasep spectrograms TRACK`: the mixture and four stems of one dataset track, as a figure."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("track", type=Path, help="a track folder holding mixture/drums/bass/other/vocals.wav")
    parser.add_argument("--out-stem", type=Path, required=True, help="writes OUT_STEM.png and OUT_STEM.pdf")
    parser.add_argument("--seconds", type=float, default=12.0, help="length shown (default 12 s; 0: all)")
    parser.add_argument("--offset", type=float, default=0.0, help="start in seconds (default 0)")


def run(args: argparse.Namespace) -> int:
    from .figures import plot_track_spectrograms

    for path in plot_track_spectrograms(args.track, args.out_stem, seconds=args.seconds or None, offset=args.offset):
        print(path)
    return 0
