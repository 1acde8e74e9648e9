"""Drums, bass and other as General MIDI parts (pretty_midi Instruments) from a song plan.

Timing and velocity are humanised: onsets jitter by a few milliseconds (tighter for kick and
snare than for hats), velocities by a few steps, and accents follow the beat. Each function
takes its own Generator, so a change in one part leaves the others as they were.
"""

from __future__ import annotations

import numpy as np
import pretty_midi

from .arrangement import Song, pick

# GM percussion keys (channel 10).
KICK, SIDE_STICK, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
CRASH, RIDE, TAMBOURINE = 49, 51, 54
TOMS = (50, 48, 47, 45, 43, 41)  # high to low

# Drum patterns: instrument -> sixteenth slots (0..15) of a bar.
EVENS, ALL16 = tuple(range(0, 16, 2)), tuple(range(16))
DRUM_PATTERNS = {
    "rock": {KICK: (0, 8, 10), SNARE: (4, 12), CLOSED_HAT: EVENS},
    "pop": {KICK: (0, 6, 8), SNARE: (4, 12), CLOSED_HAT: ALL16},
    "four_floor": {KICK: (0, 4, 8, 12), CLAP: (4, 12), CLOSED_HAT: EVENS, OPEN_HAT: (2, 6, 10, 14)},
    "halftime": {KICK: (0, 7, 10), SNARE: (8,), CLOSED_HAT: EVENS},
    "ballad": {KICK: (0, 10), SIDE_STICK: (4, 12), CLOSED_HAT: EVENS},
    "funk": {KICK: (0, 3, 10), SNARE: (4, 12), CLOSED_HAT: ALL16},
    "hiphop": {KICK: (0, 7, 8, 11), SNARE: (4, 12), CLOSED_HAT: EVENS},
}
GHOST_SLOTS = {"funk": (7, 9, 15), "pop": (15,), "hiphop": (6, 14)}
TIMING_MS = {KICK: 4.0, SNARE: 4.0, CLAP: 5.0, SIDE_STICK: 5.0}  # others: 7 ms
CYMBALS = (CRASH, RIDE, OPEN_HAT)


def humanize(rng: np.random.Generator, t: float, sigma_ms: float) -> float:
    return max(0.0, t + rng.normal(0.0, sigma_ms / 1000))


def velocity(rng: np.random.Generator, base: float, energy: float, spread: float = 6) -> int:
    return int(np.clip(round(base * (0.75 + 0.35 * energy) + rng.normal(0, spread)), 1, 127))


def add_note(inst: pretty_midi.Instrument, pitch: int, start: float, end: float, vel: int, song: Song):
    """Add a note, cut at the end of the song (a note may ring past it: the renderer cuts)."""
    if start < song.duration and end > start:
        inst.notes.append(pretty_midi.Note(velocity=vel, pitch=int(pitch), start=start, end=end))


def slot_time(song: Song, bar: int, slot: int) -> float:
    return song.time(bar, slot / 4)


def drum_part(song: Song, rng: np.random.Generator) -> pretty_midi.Instrument:
    """The song's groove; crashes open sections, fills close them; choruses ride or open up."""
    inst = pretty_midi.Instrument(program=song.programs["drums"], is_drum=True, name="drums")
    name = song.patterns["drums"]
    base = DRUM_PATTERNS[name]
    extra_kick = rng.random() < 0.5
    for section in song.sections:
        if "drums" not in section.parts:
            continue
        pattern = dict(base)
        if section.kind == "chorus" and rng.random() < 0.5:  # a bigger groove for the chorus
            hat = pattern.pop(CLOSED_HAT, EVENS)
            pattern[RIDE if rng.random() < 0.5 else OPEN_HAT] = tuple(s for s in hat if s % 4 == 0) or (0,)
            pattern.setdefault(CLOSED_HAT, (2, 6, 10, 14))
        if section.kind in ("intro", "outro", "break") and rng.random() < 0.5:
            pattern = {k: v for k, v in pattern.items() if k not in (SNARE, CLAP)}  # a lighter groove
        if section.kind == "verse" and rng.random() < 0.3:
            pattern[TAMBOURINE] = (4, 12)
        for bar in range(section.start_bar, section.end_bar):
            last_bar = bar == section.end_bar - 1 and section.end_bar < song.n_bars
            fill = last_bar and rng.random() < 0.7
            for key, slots in pattern.items():
                for slot in slots:
                    if fill and slot >= 12:
                        continue
                    accent = 1.0 if slot % 4 == 0 else (0.8 if slot % 2 == 0 else 0.62)
                    level = {KICK: 112, SNARE: 108, CLAP: 100, SIDE_STICK: 90}.get(key, 88 * accent)
                    start = humanize(rng, slot_time(song, bar, slot), TIMING_MS.get(key, 7.0))
                    add_note(inst, key, start, start + (1.2 if key in CYMBALS else 0.25),
                             velocity(rng, level, section.energy), song)
            for slot in GHOST_SLOTS.get(name, ()) if rng.random() < 0.8 else ():
                start = humanize(rng, slot_time(song, bar, slot), 6.0)
                add_note(inst, SNARE, start, start + 0.2, velocity(rng, 38, section.energy, 4), song)
            if extra_kick and rng.random() < 0.3:
                slot = int(pick(rng, (3, 11, 14)))
                start = humanize(rng, slot_time(song, bar, slot), 4.0)
                add_note(inst, KICK, start, start + 0.25, velocity(rng, 95, section.energy), song)
            if fill:
                drums = (SNARE,) * 2 + TOMS[int(rng.integers(0, 3)):][:4]
                for i, slot in enumerate(range(12, 16)):
                    key = drums[min(i + int(rng.integers(0, 2)), len(drums) - 1)]
                    start = humanize(rng, slot_time(song, bar, slot), 6.0)
                    add_note(inst, key, start, start + 0.3, velocity(rng, 80 + 8 * i, section.energy), song)
        if section.start_bar > 0 or rng.random() < 0.5:
            start = humanize(rng, song.time(section.start_bar, 0), 4.0)
            add_note(inst, CRASH, start, start + 2.0, velocity(rng, 105, section.energy), song)
    return inst


def fold(pc: int, low: int) -> int:
    """The MIDI note of pitch class `pc` in [low, low + 12)."""
    return low + (pc - low) % 12


# Bass rhythms: (eighth slot, role, length in eighths); roles: R root, 5 fifth, O octave, A approach.
BASS_PATTERNS = {
    "eighths": tuple((s, "R", 1) for s in range(8)),
    "root_fifth": ((0, "R", 2), (3, "R", 1), (4, "5", 2), (6, "R", 1), (7, "O", 1)),
    "syncopated": ((0, "R", 1.5), (3, "R", 1), (5, "R", 1), (6, "5", 1), (7, "A", 1)),
    "whole": ((0, "R", 6), (6, "5", 2)),
    "half": ((0, "R", 4), (4, "5", 3), (7, "A", 1)),
    "offbeat": tuple((s, "R", 1) for s in range(1, 8, 2)),
    "octaves": ((0, "R", 1), (1, "O", 1), (2, "R", 1), (3, "O", 1), (4, "R", 1), (5, "O", 1), (6, "5", 1), (7, "A", 1)),
}
BASS_BY_STYLE = {"pop": ("root_fifth", "syncopated", "eighths"), "rock": ("eighths", "root_fifth"),
                 "ballad": ("whole", "half"), "electronic": ("offbeat", "eighths", "octaves"),
                 "funk": ("octaves", "syncopated"), "hiphop": ("whole", "syncopated")}


def bass_part(song: Song, rng: np.random.Generator) -> pretty_midi.Instrument:
    """Roots, fifths, octaves and chromatic approaches to the next root, in E1..D#3."""
    inst = pretty_midi.Instrument(program=song.programs["bass"], name="bass")
    pattern = BASS_PATTERNS[pick(rng, BASS_BY_STYLE[song.style])]
    legato, eighth = rng.uniform(0.6, 0.95), song.beat / 2
    for section in song.sections:
        if "bass" not in section.parts:
            continue
        for bar in range(section.start_bar, section.end_bar):
            root = fold(song.chord(bar)[0], 28)
            next_root = fold(song.chord(bar + 1)[0], 28)
            for slot, role, length in pattern:
                pitch = {"R": root, "5": root + 7, "O": root + 12,
                         "A": next_root + (1 if rng.random() < 0.5 else -1)}[role]
                start = humanize(rng, song.time(bar, slot / 2), 6.0)
                add_note(inst, pitch, start, start + length * eighth * legato,
                         velocity(rng, 104 if slot % 2 == 0 else 92, section.energy), song)
    return inst


def voice_chord(classes, center: int, previous: list[int] | None) -> list[int]:
    """Close-position voicing in [center - 6, center + 6], nearest to the previous voicing."""
    options = []
    for inversion in range(len(classes)):
        order = classes[inversion:] + classes[:inversion]
        notes = [fold(order[0], center - 6)]
        for pc in order[1:]:
            notes.append(notes[-1] + (pc - notes[-1]) % 12)
        options.append(notes)
    if previous is None:
        return min(options, key=lambda n: abs(np.mean(n) - center))
    return min(options, key=lambda n: sum(abs(a - b) for a, b in zip(sorted(n), sorted(previous))))


# Comping rhythms: (beat, length in beats) of each chord stroke in a bar; "arpeggio" is special.
COMPING = {"whole": ((0, 4),), "straight": ((0, 1), (1, 1), (2, 1), (3, 1)),
           "offbeat": ((0.5, 0.4), (1.5, 0.4), (2.5, 0.4), (3.5, 0.4)),
           "driving": tuple((b / 2, 0.45) for b in range(8))}
GUITARS = range(24, 32)
DISTORTED = (29, 30)


def harmony_part(song: Song, rng: np.random.Generator) -> pretty_midi.Instrument:
    """Comping on the chords: held, on the beat, off-beat, driving eighths or an arpeggio."""
    program = song.programs["harmony"]
    inst = pretty_midi.Instrument(program=program, name="other:harmony")
    rhythm, previous = song.patterns["comping"], None
    strum = program in GUITARS
    for section in song.sections:
        if "harmony" not in section.parts:
            continue
        for bar in range(section.start_bar, section.end_bar):
            classes = list(song.chord(bar))
            if program in DISTORTED:  # power chords, low
                root = fold(classes[0], 40)
                chord = [root, root + 7, root + 12]
            else:
                chord = previous = voice_chord(classes, 62, previous)
            if rhythm == "arpeggio":
                cycle = chord + [chord[0] + 12]
                for i in range(8):
                    start = humanize(rng, song.time(bar, i / 2), 6.0)
                    add_note(inst, cycle[i % len(cycle)], start, start + song.beat * 0.9,
                             velocity(rng, 82 if i % 2 == 0 else 70, section.energy), song)
                continue
            for beat, length in COMPING[rhythm]:
                onset = humanize(rng, song.time(bar, beat), 7.0)
                vel = velocity(rng, 86 if beat == int(beat) else 76, section.energy)
                for k, pitch in enumerate(chord):
                    start = onset + (k * rng.uniform(0.006, 0.014) if strum else 0.0)
                    add_note(inst, pitch, start, onset + length * song.beat * 0.95, vel, song)
    return inst


def sustain_part(song: Song, rng: np.random.Generator) -> pretty_midi.Instrument:
    """Held chords, one a bar, tied across the bar line: strings, pads or organ."""
    inst = pretty_midi.Instrument(program=song.programs["sustain"], name="other:sustain")
    previous = None
    for section in song.sections:
        if "sustain" not in section.parts:
            continue
        for bar in range(section.start_bar, section.end_bar):
            chord = previous = voice_chord(list(song.chord(bar)), 57, previous)
            start = humanize(rng, song.time(bar, 0), 10.0)
            end = song.time(bar + 1, 0) + 0.03
            vel = velocity(rng, 72, section.energy, 4)
            for pitch in chord:
                add_note(inst, pitch, start, end, vel, song)
    return inst


def lead_part(song: Song, rng: np.random.Generator) -> pretty_midi.Instrument:
    """Short scale-wise fills above the chords where the voice rests (intros, breaks)."""
    inst = pretty_midi.Instrument(program=song.programs["lead"], name="other:lead")
    scale = sorted(p for p in range(67, 86) if p % 12 in song.scale_classes())
    position = len(scale) // 2
    for section in song.sections:
        if "lead" not in section.parts:
            continue
        for bar in range(section.start_bar, section.end_bar):
            beat = float(pick(rng, (0.0, 0.5, 1.0)))
            while beat < 3.5:
                length = float(pick(rng, (0.5, 0.5, 1.0, 1.5)))
                position = int(np.clip(position + pick(rng, (-2, -1, -1, 1, 1, 2)), 0, len(scale) - 1))
                start = humanize(rng, song.time(bar, beat), 8.0)
                add_note(inst, scale[position], start, start + length * song.beat * 0.9,
                         velocity(rng, 90, section.energy), song)
                beat += length + (0.5 if rng.random() < 0.25 else 0.0)
    return inst


def pan_value(position: float) -> int:
    """MIDI CC10 value for a position in [-1, 1]."""
    return int(np.clip(round(64 + 63 * position), 0, 127))


def other_parts(song: Song, rng: np.random.Generator) -> list[pretty_midi.Instrument]:
    """The other stem's parts, each with its own pan (CC10) and level (CC7) in the stem."""
    side = 1 if rng.random() < 0.5 else -1
    parts = [(harmony_part, side * rng.uniform(0.2, 0.5), rng.uniform(95, 110)),
             (sustain_part, -side * rng.uniform(0.0, 0.3), rng.uniform(70, 92)),
             (lead_part, -side * rng.uniform(0.2, 0.5), rng.uniform(85, 100))]
    out = []
    for make, pan, level in parts:
        inst = make(song, rng)
        inst.control_changes += [pretty_midi.ControlChange(10, pan_value(pan), 0.0),
                                 pretty_midi.ControlChange(7, int(level), 0.0)]
        out.append(inst)
    return [inst for inst in out if inst.notes]
