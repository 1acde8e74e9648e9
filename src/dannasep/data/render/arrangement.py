"""The musical plan of one rendered track: style, tempo, key, chords, song form, instruments.

Everything is drawn from one numpy Generator, so a plan depends only on the track's seed.
The parts (notes) are written from this plan by `parts`; this module knows no MIDI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as scale degrees (0 = tonic), the usual pop and rock ones.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (0, 2, 3, 4),
              (3, 4, 0, 0), (0, 4, 5, 2), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4),
              (5, 6, 0, 0), (0, 2, 5, 4)),
}

# General MIDI programs (0-based) and drum kits (bank 128 presets), grouped by the family the
# issue names: drums from the GM kits, bass from the bass programs, other from pianos,
# guitars, organs, strings, pads and leads, vocals on the voice programs.
KITS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "tr808": 25, "jazz": 32, "brush": 40}
VOICE_PROGRAMS = {"choir_aahs": 52, "voice_oohs": 53, "synth_voice": 54}
# Lead vocals are mostly one singer: the choir (an ensemble sample, hardly periodic in a low
# register) sings lead now and then only.
VOICE_WEIGHTS = {"voice_oohs": 0.5, "synth_voice": 0.35, "choir_aahs": 0.15}


@dataclass(frozen=True)
class Style:
    tempo: tuple[float, float]       # BPM range
    drums: tuple[str, ...]           # drum pattern names (parts.DRUM_PATTERNS)
    kits: tuple[str, ...]
    bass: tuple[int, ...]            # GM programs 32..39
    harmony: tuple[int, ...]         # comping: pianos, guitars, organs
    sustain: tuple[int, ...]         # held chords: strings, pads, organs
    lead: tuple[int, ...]            # fills between vocal phrases: leads, guitars
    comping: tuple[str, ...]         # parts.COMPING rhythms
    swing: float                     # largest swing, as a fraction of the swung note


STYLES = {
    "pop": Style((90, 130), ("pop", "rock", "four_floor"), ("standard", "room"), (33, 34, 38),
                 (0, 1, 4, 25, 27), (48, 49, 89, 90), (80, 81, 27), ("straight", "offbeat", "arpeggio"), 0.1),
    "rock": Style((100, 160), ("rock", "halftime"), ("standard", "room", "power"), (33, 34),
                  (29, 30, 27, 25), (48, 16, 17), (29, 30, 84), ("straight", "driving"), 0.0),
    "ballad": Style((70, 95), ("ballad", "halftime"), ("standard", "jazz", "brush"), (32, 33, 35),
                    (0, 1, 4, 24, 25), (48, 49, 50, 89), (27, 80, 24), ("whole", "arpeggio"), 0.15),
    "electronic": Style((110, 135), ("four_floor", "hiphop"), ("electronic", "tr808"), (38, 39),
                        (4, 5, 81, 90), (88, 89, 90, 91, 94, 95, 50, 51), (80, 81, 83),
                        ("offbeat", "arpeggio", "whole"), 0.05),
    "funk": Style((90, 120), ("funk", "pop"), ("standard", "room"), (33, 35),
                  (7, 4, 26, 27, 16), (16, 17, 49), (27, 80), ("offbeat", "driving"), 0.2),
    "hiphop": Style((70, 100), ("hiphop", "halftime"), ("tr808", "electronic", "standard"), (38, 39, 33),
                    (4, 5, 0), (89, 48, 88), (80, 81), ("whole", "offbeat"), 0.3),
}

# Which parts play in each kind of section: probabilities (1 = always). The held bed
# (strings, pads, organ) plays almost throughout: the other stem is the sustained, harmonic one.
SECTION_PARTS = {
    "intro": {"drums": 0.5, "bass": 0.4, "harmony": 1.0, "sustain": 0.7, "lead": 0.4, "vocals": 0.0},
    "verse": {"drums": 0.9, "bass": 1.0, "harmony": 1.0, "sustain": 1.0, "lead": 0.0, "vocals": 1.0},
    "chorus": {"drums": 1.0, "bass": 1.0, "harmony": 1.0, "sustain": 1.0, "lead": 0.0, "vocals": 1.0},
    "break": {"drums": 0.3, "bass": 0.5, "harmony": 0.6, "sustain": 1.0, "lead": 0.6, "vocals": 0.3},
    "outro": {"drums": 0.6, "bass": 0.6, "harmony": 1.0, "sustain": 0.7, "lead": 0.3, "vocals": 0.0},
}
FORM = ("intro", "verse", "chorus", "break", "verse", "chorus", "chorus", "outro")


@dataclass(frozen=True)
class Section:
    kind: str                 # intro, verse, chorus, break, outro
    start_bar: int
    bars: int
    parts: frozenset[str]     # parts playing: drums, bass, harmony, sustain, lead, vocals
    energy: float             # 0..1, scales velocities and pattern density

    @property
    def end_bar(self) -> int:
        return self.start_bar + self.bars


@dataclass(frozen=True)
class Song:
    duration: float                  # seconds
    style: str
    tempo: float                     # BPM, four beats a bar
    swing: float                     # delay of the off-beat eighths, as a fraction of an eighth
    tonic: int                       # pitch class 0..11
    mode: str
    dominant_major: bool             # minor keys: a major V chord (harmonic minor)
    progressions: dict               # section kind -> chord degrees, one chord a bar
    sections: tuple[Section, ...]
    programs: dict                   # part -> GM program (drums: kit preset)
    patterns: dict                   # part -> pattern name (drums, comping)
    sevenths: bool

    @property
    def beat(self) -> float:
        return 60.0 / self.tempo

    @property
    def bar_seconds(self) -> float:
        return 4 * self.beat

    @property
    def n_bars(self) -> int:
        return self.sections[-1].end_bar

    @property
    def scale(self) -> tuple[int, ...]:
        return SCALES[self.mode]

    def time(self, bar: int, beat: float) -> float:
        """Seconds at `beat` (0..4, fractional) of `bar`, off-beat eighths swung."""
        eighths = beat * 2
        swung = self.swing if abs(eighths - round(eighths)) < 1e-9 and round(eighths) % 2 else 0.0
        return (bar * 4 + beat + swung / 2) * self.beat

    def section_at(self, bar: int) -> Section:
        for section in self.sections:
            if section.start_bar <= bar < section.end_bar:
                return section
        return self.sections[-1]

    def chord(self, bar: int) -> tuple[int, ...]:
        """Pitch classes of the bar's chord, root first (a triad, or a seventh chord)."""
        section = self.section_at(bar)
        degrees = self.progressions[section.kind]
        root = degrees[(bar - section.start_bar) % len(degrees)]
        steps = (0, 2, 4, 6) if self.sevenths else (0, 2, 4)
        classes = []
        for step in steps:
            index = (root + step) % 7
            pc = self.scale[index]
            if self.mode == "minor" and self.dominant_major and index == 6 and root == 4:
                pc += 1  # the leading tone of harmonic minor: V is major
            classes.append((self.tonic + pc) % 12)
        return tuple(classes)

    def scale_classes(self) -> set[int]:
        return {(self.tonic + s) % 12 for s in self.scale}


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def plan_form(rng: np.random.Generator, n_bars: int) -> tuple[Section, ...]:
    """Sections following FORM until `n_bars` are covered; short clips get 2-bar sections."""
    short = n_bars <= 8
    sections, bar, i = [], 0, 0
    while bar < n_bars:
        kind = FORM[i % len(FORM)]
        if kind in ("intro", "outro"):
            bars = int(rng.integers(1, 3)) if short else int(pick(rng, (2, 4)))
        elif kind == "break":
            bars = 2 if short else int(pick(rng, (2, 4)))
        else:
            bars = 2 if short else int(pick(rng, (4, 8)))
        parts = {p for p, prob in SECTION_PARTS[kind].items() if rng.random() < prob}
        if not {"harmony", "sustain"} & parts:
            parts.add("sustain")  # the other stem never falls silent for a whole section
        if "vocals" in parts:
            parts.discard("lead")  # fills answer the voice, they do not cover it
        energy = {"intro": 0.5, "verse": 0.65, "chorus": 0.9, "break": 0.5, "outro": 0.55}[kind]
        sections.append(Section(kind, bar, bars, frozenset(parts), energy + rng.uniform(-0.08, 0.08)))
        bar, i = bar + bars, i + 1
    return tuple(sections)


def plan_song(rng: np.random.Generator, duration: float) -> Song:
    """Draw a style, tempo (70-160 BPM), key, mode, chords, form and instruments."""
    style_name = pick(rng, sorted(STYLES))
    style = STYLES[style_name]
    tempo = float(rng.uniform(*style.tempo))
    mode = pick(rng, ("major", "minor"))
    verse = pick(rng, PROGRESSIONS[mode])
    chorus = pick(rng, PROGRESSIONS[mode])
    progressions = {"intro": verse, "verse": verse, "chorus": chorus, "break": pick(rng, PROGRESSIONS[mode]),
                    "outro": chorus}
    n_bars = math.ceil(duration / (4 * 60.0 / tempo))
    programs = {
        "drums": KITS[pick(rng, style.kits)],
        "bass": int(pick(rng, style.bass)),
        "harmony": int(pick(rng, style.harmony)),
        "sustain": int(pick(rng, style.sustain)),
        "lead": int(pick(rng, style.lead)),
        "vocals": VOICE_PROGRAMS[str(rng.choice(list(VOICE_WEIGHTS), p=list(VOICE_WEIGHTS.values())))],
    }
    patterns = {"drums": pick(rng, style.drums), "comping": pick(rng, style.comping)}
    return Song(duration=duration, style=style_name, tempo=tempo, swing=float(rng.uniform(0, style.swing)),
                tonic=int(rng.integers(12)), mode=mode, dominant_major=bool(rng.random() < 0.6),
                progressions=progressions, sections=plan_form(rng, n_bars), programs=programs,
                patterns=patterns, sevenths=bool(rng.random() < 0.3))
