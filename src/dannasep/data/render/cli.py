"""`dannasep render`: a MUSDB18-HQ-shaped dataset rendered from sampled instruments.

Same layout, track names, split and format as `dannasep synth` (44.1 kHz stereo PCM_16,
mixture = exact sum of the four stems), but the stems are General MIDI arrangements played by
FluidSynth on a SoundFont pinned by sha256, with sung syllables from espeak-ng, and produced
like records. The same seed gives the same bytes (same SoundFont, FluidSynth, espeak-ng and
Python packages on the same platform); tracks are independent of each other.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from ...audio import write_wav
from ...constants import SAMPLE_RATE, STEMS
from ...errors import ConfigError, DataError
from ...io import atomic_dir
from ..synth import track_list
from .rendering import (
    DEFAULT_SOUNDFONT,
    FLUIDR3_GM_SHA256,
    SoundFontRenderer,
    check_soundfont,
    load_fluidsynth,
)
from .track import render_track
from .voice import espeak_available

log = logging.getLogger(__name__)


def check_tools(soundfont: str | Path, sha256: str | None) -> Path:
    """Cheap checks before any rendering: espeak-ng, the FluidSynth library, the SoundFont."""
    if not espeak_available():
        raise DataError("espeak-ng not found on PATH; install Debian's espeak-ng (make setup does)")
    load_fluidsynth()
    return check_soundfont(soundfont, sha256)


def render_dataset(out: Path, seed: int, train_tracks: int, valid_tracks: int, test_tracks: int,
                   duration: float, soundfont: str | Path = DEFAULT_SOUNDFONT,
                   soundfont_sha256: str | None = FLUIDR3_GM_SHA256, overwrite: bool = False) -> None:
    """Write out/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav into a temporary
    folder renamed onto `out` only once every file is complete."""
    from tqdm import tqdm

    out = Path(out)
    tracks = track_list(train_tracks, valid_tracks, test_tracks)
    if not (math.isfinite(duration) and duration >= 1.0):
        raise ConfigError(f"--duration {duration}: give at least 1 second a track")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists; delete it or pass --overwrite")
    soundfont = check_tools(soundfont, soundfont_sha256)
    started = time.process_time()
    with SoundFontRenderer(soundfont) as renderer, atomic_dir(out) as tmp:
        for subset in ("train", "test"):
            (tmp / subset).mkdir()
        for subset, name in tqdm(tracks, desc="render", unit="track"):
            stems = render_track(renderer, seed, subset, name, duration)
            (tmp / subset / name).mkdir()
            for stem in STEMS:
                write_wav(tmp / subset / name / f"{stem}.wav", stems[stem], SAMPLE_RATE)
    cpu = time.process_time() - started + sum(os.times()[2:4])
    log.info("rendered %d tracks of %.1f s to %s (seed %d, %s; %.2f CPU s a track)",
             len(tracks), duration, out, seed, soundfont, cpu / max(len(tracks), 1))


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    parser.add_argument("--seed", type=int, default=2021, help="same seed, same bytes (default 2021)")
    parser.add_argument("--train-tracks", type=int, default=6, help="tracks of the official train split (0..86)")
    parser.add_argument("--valid-tracks", type=int, default=2, help="tracks of the official validation split (0..14)")
    parser.add_argument("--test-tracks", type=int, default=3, help="test tracks (0..50)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds a track (default 12)")
    parser.add_argument("--soundfont", default=DEFAULT_SOUNDFONT,
                        help=f"General MIDI SoundFont (default {DEFAULT_SOUNDFONT}, Debian's fluid-soundfont-gm)")
    parser.add_argument("--soundfont-sha256", default=FLUIDR3_GM_SHA256,
                        help="expected sha256 of the SoundFont (default: FluidR3_GM's); '' to skip the check")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args) -> int:
    render_dataset(args.out, args.seed, args.train_tracks, args.valid_tracks, args.test_tracks, args.duration,
                   soundfont=args.soundfont, soundfont_sha256=args.soundfont_sha256 or None,
                   overwrite=args.overwrite)
    return 0
