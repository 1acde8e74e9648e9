"""The lead vocal line: phrases with gaps, a sung syllable per note, scoops, vibrato, falls.

Phrases are cut into two-bar units of a vocal section, each sung for one to one and three
quarter bars and followed by a gap (where the singer breathes). A section's rhythm motif comes
back in each of its phrases, as in a song. Pitch bends (range +-2 semitones, the GM default)
carry the expression a sampled voice program lacks: a scoop up into some notes, vibrato that
grows on held notes, a fall off some phrase ends, and a slow intonation drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pretty_midi

from .arrangement import Song, pick
from .parts import add_note, humanize, velocity

BEND_RANGE_CENTS = 200.0
MIN_GAP_S = 0.6  # at least this (and a beat) between phrases, before the next pickup
BEND_STEP = 0.01  # seconds between pitch-bend events in vibrato and glides
CONSONANTS = ("l", "n", "m", "d", "t", "k", "s", "h", "b", "w", "j", "S")
# espeak-ng phoneme mnemonics of the vowels, with a spelling for the MIDI lyric.
VOWELS = {"A:": "a", "oU": "o", "u:": "oo", "i:": "ee", "eI": "ay", "aI": "i"}
SPELLING = {"S": "sh", "j": "y"}
REGISTERS = {"low": (48, 67), "high": (57, 77)}  # MIDI ranges: 131..392 Hz and 220..698 Hz
ESPEAK_VOICES = {"low": ("en-us+m3", "en+m1", "en-gb+m4"), "high": ("en-us+f3", "en+f2", "en-gb+f4")}


@dataclass
class VocalLine:
    """The vocal part and what the voice renderer needs beyond MIDI."""

    instrument: pretty_midi.Instrument
    syllables: list[str] = field(default_factory=list)    # espeak phonemes, one per note
    breaths: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    espeak_voice: str = "en-us"

    def lyrics(self) -> list[pretty_midi.Lyric]:
        return [pretty_midi.Lyric(spelling(s), n.start) for n, s in zip(self.instrument.notes, self.syllables)]


def syllable_set(rng: np.random.Generator, n: int) -> list[str]:
    """The song's 'lyrics': a few consonant-vowel syllables, some bare vowels."""
    out = []
    while len(out) < n:
        vowel = pick(rng, sorted(VOWELS))
        syllable = vowel if rng.random() < 0.15 else pick(rng, CONSONANTS) + vowel
        if syllable not in out:
            out.append(syllable)
    return out


def spelling(syllable: str) -> str:
    for vowel, letters in VOWELS.items():
        if syllable.endswith(vowel):
            consonant = syllable[: -len(vowel)]
            return SPELLING.get(consonant, consonant) + letters
    return syllable


def motif(rng: np.random.Generator, beats: float) -> list[float]:
    """Note lengths in beats filling `beats`, mostly eighths and quarters, ending held."""
    lengths, total = [], 0.0
    while total < beats - 1.0:
        length = float(pick(rng, (0.5, 0.5, 0.5, 1.0, 1.0, 1.5)))
        lengths.append(min(length, beats - 1.0 - total) if total + length > beats - 1.0 else length)
        total += lengths[-1]
    lengths.append(beats - total)  # the phrase's last note is held
    return [x for x in lengths if x > 0]


def bend(cents: float) -> int:
    return int(np.clip(round(cents / BEND_RANGE_CENTS * 8192), -8192, 8191))


def expression(inst: pretty_midi.Instrument, note: pretty_midi.Note, rng, scoop: bool, fall: bool,
               vibrato: tuple[float, float, float], drift: float) -> None:
    """Pitch bends over one note: scoop in, vibrato growing after ~200 ms, fall off the end."""
    rate, depth, delay = vibrato
    scoop_s, scoop_cents = rng.uniform(0.05, 0.12), -rng.uniform(60, 150)
    fall_s, fall_cents = min(0.18, 0.4 * (note.end - note.start)), -rng.uniform(100, 200)
    phase = rng.uniform(0, 2 * np.pi)
    for t in np.arange(note.start, note.end, BEND_STEP):
        age, left = t - note.start, note.end - t
        cents = drift
        if scoop and age < scoop_s:
            cents += scoop_cents * (1 - age / scoop_s) ** 2
        growth = np.clip((age - delay) / 0.3, 0, 1)
        cents += growth * depth * np.sin(2 * np.pi * rate * age + phase)
        if fall and left < fall_s:
            cents += fall_cents * (1 - left / fall_s) ** 2
        inst.pitch_bends.append(pretty_midi.PitchBend(bend(cents), float(t)))


def vocal_part(song: Song, rng: np.random.Generator) -> VocalLine:
    """Phrases in the vocal sections; chord tones on strong beats, steps in between."""
    register = pick(rng, sorted(REGISTERS))
    low, high = REGISTERS[register]
    inst = pretty_midi.Instrument(program=song.programs["vocals"], name="vocals")
    line = VocalLine(inst, espeak_voice=pick(rng, ESPEAK_VOICES[register]))
    lyrics = syllable_set(rng, int(rng.integers(5, 9)))
    scale = [p for p in range(low, high + 1) if p % 12 in song.scale_classes()]
    vibrato = (rng.uniform(5.0, 6.5), rng.uniform(25, 55), rng.uniform(0.15, 0.3))
    position = len(scale) // 3
    motifs: dict[str, list[float]] = {}
    for section in song.sections:
        if "vocals" not in section.parts:
            continue
        lift = 2 if section.kind == "chorus" else 0  # choruses sit higher
        for unit in range(section.start_bar, section.end_bar, 2):
            unit_bars = min(2, section.end_bar - unit)
            pickup = float(pick(rng, (0.0, 0.0, 0.5, 1.0)))
            sung = unit_bars * 4 - pickup - max(1.0, MIN_GAP_S / song.beat)  # leave a gap to breathe
            if sung < 1.5:
                continue
            key = f"{section.kind}:{sung:g}"
            if key not in motifs:
                motifs[key] = motif(rng, sung)
            beat, start_time = pickup, song.time(unit, pickup)
            gap_start = song.time(unit, 0) if inst.notes == [] else inst.notes[-1].end
            if start_time - gap_start > 0.35:  # a breath before the phrase
                length = min(rng.uniform(0.25, 0.45), start_time - gap_start - 0.05)
                line.breaths.append((start_time - length - 0.04, length))
            phrase_syllables = [pick(rng, lyrics) for _ in motifs[key]]
            drift = rng.normal(0, 6)
            for i, length in enumerate(motifs[key]):
                bar, in_bar = unit + int(beat // 4), beat % 4
                strong = in_bar in (0.0, 2.0)
                step = int(pick(rng, (-2, -1, -1, 0, 1, 1, 2)))
                position = int(np.clip(position + step, 0, len(scale) - 1))
                pitch = scale[position] + lift
                if strong:  # move to the nearest chord tone
                    tones = [p for p in range(low, high + 1) if p % 12 in song.chord(bar)]
                    pitch = min(tones, key=lambda p: abs(p - pitch)) if tones else pitch
                    position = int(np.argmin([abs(p - pitch) for p in scale]))
                pitch = int(np.clip(pitch, low, high))
                onset = humanize(rng, song.time(bar, in_bar), 12.0)
                end = song.time(unit, beat + length) - (0.02 if i + 1 < len(motifs[key]) else 0.0)
                arch = np.sin(np.pi * (i + 0.5) / len(motifs[key]))  # phrase dynamics
                before = len(inst.notes)
                add_note(inst, pitch, onset, min(end, song.duration), velocity(rng, 88 + 18 * arch, section.energy), song)
                if len(inst.notes) > before:
                    line.syllables.append(phrase_syllables[i])
                    last = i + 1 == len(motifs[key])
                    expression(inst, inst.notes[-1], rng, scoop=rng.random() < 0.45,
                               fall=last and rng.random() < 0.35, vibrato=vibrato, drift=drift)
                beat += length
    return line
