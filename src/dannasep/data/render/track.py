"""One rendered track: plan -> MIDI parts -> FluidSynth -> sung syllables -> production -> int16.

Every random choice comes from numpy Generators seeded by SHA-256 of (seed, subset, name), one
stream a part, so a track's bytes depend only on these three values (and on the pinned
SoundFont, FluidSynth, espeak-ng and library versions), never on which other tracks are made.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pretty_midi

from ...constants import SAMPLE_RATE, SOURCES
from . import arrangement, melody, parts, production, voice
from .rendering import SoundFontRenderer

STREAMS = ("song", "drums", "bass", "other", "vocals", "voice", "production", "balance")


def track_rngs(seed: int, subset: str, name: str) -> dict[str, np.random.Generator]:
    digest = hashlib.sha256(f"rendered\x00{seed}\x00{subset}\x00{name}".encode()).digest()
    root = np.random.SeedSequence(np.frombuffer(digest, dtype="<u4").tolist())
    return {part: np.random.default_rng(s) for part, s in zip(STREAMS, root.spawn(len(STREAMS)))}


def compose(rngs: dict[str, np.random.Generator], duration: float):
    """(song plan, PrettyMIDI score with one instrument a part, the vocal line)."""
    song = arrangement.plan_song(rngs["song"], duration)
    line = melody.vocal_part(song, rngs["vocals"])
    score = pretty_midi.PrettyMIDI(initial_tempo=song.tempo)
    score.instruments += [parts.drum_part(song, rngs["drums"]), parts.bass_part(song, rngs["bass"]),
                          *parts.other_parts(song, rngs["other"]), line.instrument]
    score.lyrics += line.lyrics()
    return song, score, line


def stem_of(instrument: pretty_midi.Instrument) -> str:
    return instrument.name.split(":")[0]


def render_track(renderer: SoundFontRenderer, seed: int, subset: str, name: str,
                 duration: float) -> dict[str, np.ndarray]:
    """The five stems of one track as int16 (samples, 2); mixture == exact sum of the sources."""
    rngs = track_rngs(seed, subset, name)
    _, score, line = compose(rngs, duration)
    n_samples = int(round(duration * SAMPLE_RATE))
    grouped = {s: [i for i in score.instruments if stem_of(i) == s] for s in SOURCES}
    dry = renderer.render(grouped, n_samples)
    dry["vocals"] = voice.sing(dry["vocals"], line, rngs["voice"])
    produced = {s: production.produce(dry[s], s, rngs["production"]) for s in SOURCES}
    return production.to_pcm16(production.balance(produced, rngs["balance"]))
