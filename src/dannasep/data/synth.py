"""`dannasep synth`: a synthetic dataset with MUSDB18-HQ's exact layout, track names and split.

Each track is a short piece in one key and tempo, made of four synthesised stems that differ
the way the Danna-Sep models exploit: drums are transients (kick, snare, hi-hats), bass is
low plucked harmonic notes, vocals are voiced formant glides with vibrato and rests, other is
sustained chord pads plus arpeggios. Everything about a track (tempo, key, chords, patterns,
gains, panning) comes from numpy Generators seeded by a SHA-256 of (seed, subset, name), so
the same arguments give the same bytes (with the same numpy on the same platform), and a
track does not depend on which other tracks are generated. The mixture is the exact int16
sum of the int16 stems.

All synthesis is mono float64 of shape (samples,); stems become (samples, 2) when panned.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import write_wav
from ..constants import SAMPLE_RATE, SOURCES, STEMS
from ..errors import ConfigError
from ..io import atomic_dir
from .tracks import TEST_TRACKS, TRAIN_SPLIT_TRACKS, VALID_TRACKS

log = logging.getLogger(__name__)
SR = SAMPLE_RATE
TWO_PI = 2.0 * np.pi

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as scale degrees (0 = tonic), one chord a bar.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4), (1, 4, 0, 0)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2)),
}
# Drum patterns on the 8 eighth-note slots of a bar: kick, snare, closed hat, open hat.
DRUM_PATTERNS = (
    ((0, 4), (2, 6), (0, 1, 2, 3, 4, 5, 6, 7), ()),  # rock
    ((0, 2, 4, 6), (2, 6), (0, 2, 4, 6), (1, 3, 5, 7)),  # four on the floor
    ((0, 3, 5), (4,), (0, 1, 2, 3, 4, 5, 6, 7), ()),  # half time
)
BASS_PATTERNS = ((0, 2, 4, 6), (0, 3, 4, 6, 7), (0, 1, 2, 3, 4, 5, 6, 7), (0, 3, 6))
# Formants (F1, F2, F3) in Hz of the vowels a, e, i, o, u; relative gains; bandwidths in Hz.
VOWELS = np.array([[800, 1150, 2900], [450, 1700, 2600], [300, 2300, 3000],
                   [450, 800, 2830], [325, 700, 2530]], dtype=float)
FORMANT_GAINS = np.array([1.0, 0.6, 0.3])[:, None]
FORMANT_BANDWIDTHS = np.array([120.0, 150.0, 220.0])[:, None]
CONTROL_HOP = 64  # samples between control points of the vocal contours (~1.5 ms)


@dataclass(frozen=True)
class Song:
    """The musical plan shared by the four stems of one track."""

    n_samples: int
    beat: float  # seconds a beat (4 beats a bar)
    swing: float  # delay of off-beat eighths, as a fraction of an eighth
    tonic: int  # MIDI note of the key's tonic, octave 3 (48..59)
    scale: tuple[int, ...]
    chords: tuple[tuple[int, ...], ...]  # per bar: scale indices of the chord tones

    @property
    def n_bars(self) -> int:
        return math.ceil(self.n_samples / (4 * self.beat * SR))

    def midi(self, scale_index: int) -> int:
        octave, step = divmod(scale_index, len(self.scale))
        return self.tonic + 12 * octave + self.scale[step]

    def slot_time(self, bar: int, slot: int) -> float:
        """Start in seconds of eighth-note `slot` (0..7) of `bar`, swung on off-beats."""
        eighth = self.beat / 2
        return (bar * 8 + slot) * eighth + (self.swing * eighth if slot % 2 else 0.0)


def midi_to_hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=float) - 69.0) / 12.0)


def fold(midi: int, low: int) -> int:
    """Move `midi` by octaves into [low, low + 12)."""
    return low + (midi - low) % 12


def harmonic_sum(phase: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """sum_k amps[k-1] * sin(k * phase); phase (n,), amps (K,) or (K, n).

    Uses sin(k p) = 2 cos(p) sin((k-1) p) - sin((k-2) p): one sine for all harmonics.
    """
    amps = np.asarray(amps, dtype=float)
    two_cos = 2.0 * np.cos(phase)
    previous, current = np.zeros_like(phase), np.sin(phase)
    out = amps[0] * current
    for k in range(1, len(amps)):
        previous, current = current, two_cos * current - previous
        out += amps[k] * current
    return out


def add_at(out: np.ndarray, sound: np.ndarray, start_s: float) -> None:
    """Add `sound` into `out` from `start_s` seconds on, cutting what runs past the end."""
    start = max(0, int(round(start_s * SR)))
    if start < len(out):
        part = sound[: len(out) - start]
        out[start : start + len(part)] += part


def fade_edges(x: np.ndarray, attack_s: float, release_s: float) -> np.ndarray:
    """Raised-cosine fade-in and fade-out so that no note starts or ends with a click."""
    for seconds, sl in ((attack_s, slice(None)), (release_s, slice(None, None, -1))):
        m = min(len(x), max(1, int(seconds * SR)))
        x[sl][:m] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(m) / m)
    return x


def pluck(freq: float, seconds: float, decay_s: float, amps: np.ndarray, rng, release_s=0.03):
    """A plucked harmonic note: upper harmonics die faster; (samples,)."""
    t = np.arange(int((seconds + release_s) * SR)) / SR
    k = np.arange(len(amps))[:, None]
    envelopes = np.asarray(amps)[:, None] * np.exp(-t * (1.0 + k) / decay_s)
    note = harmonic_sum(TWO_PI * freq * t + rng.uniform(0, TWO_PI), envelopes)
    return fade_edges(note, 0.004, release_s)


def plan_song(rng: np.random.Generator, n_samples: int) -> Song:
    """Draw a key, mode, tempo, swing and chord progression (one chord a bar)."""
    mode = ("major", "minor")[rng.integers(2)]
    progression = PROGRESSIONS[mode][rng.integers(len(PROGRESSIONS[mode]))]
    tones = 4 if rng.random() < 0.35 else 3  # sometimes seventh chords
    beat = 60.0 / rng.uniform(80.0, 140.0)
    bars = math.ceil(n_samples / (4 * beat * SR))
    roots = [progression[b % len(progression)] for b in range(bars)]
    chords = tuple(tuple(root + 2 * i for i in range(tones)) for root in roots)  # stacked thirds
    swing, tonic = float(rng.uniform(0.0, 0.25)), int(48 + rng.integers(12))
    return Song(n_samples, beat, swing, tonic, SCALES[mode], chords)


def drum_kit(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One track's kit: a pitch-dropping sine kick, noise + tone snare, high-passed hats."""
    t = np.arange(int(0.5 * SR)) / SR
    sweep = rng.uniform(45, 60) + rng.uniform(70, 130) * np.exp(-t / rng.uniform(0.02, 0.05))
    kick = np.sin(TWO_PI * np.cumsum(sweep) / SR) * np.exp(-t / rng.uniform(0.08, 0.14))
    kick += 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.002)  # beater click
    ts = t[: int(0.3 * SR)]
    # Noise through small FIR band-passes: snare rattle around 2-8 kHz, hats around 11 kHz.
    rattle = np.convolve(rng.standard_normal(len(ts) + 4), [1, 1, 0, -1, -1], mode="valid") / 2
    snare = 0.7 * rattle * np.exp(-ts / rng.uniform(0.05, 0.11))
    snare += 0.6 * np.sin(TWO_PI * rng.uniform(160, 230) * ts) * np.exp(-ts / 0.05)

    def hat(decay):
        noise = rng.standard_normal(len(ts) + 2)
        return 0.4 * (noise[2:] - noise[:-2]) * np.exp(-ts / decay)

    kit = {"kick": kick, "snare": snare, "hat": hat(rng.uniform(0.015, 0.035)),
           "open_hat": hat(rng.uniform(0.08, 0.15))}
    return {name: fade_edges(x, 0.0005, 0.01) for name, x in kit.items()}


def render_drums(song: Song, rng: np.random.Generator) -> np.ndarray:
    """The kit played on the track's pattern with a random extra kick, accents and jitter."""
    kit = drum_kit(rng)
    kicks, snares, hats, open_hats = DRUM_PATTERNS[rng.integers(len(DRUM_PATTERNS))]
    out = np.zeros(song.n_samples)
    for bar in range(song.n_bars):
        bar_kicks = kicks + ((int(rng.choice([3, 5, 7])),) if rng.random() < 0.3 else ())
        for name, slots, level in (("kick", bar_kicks, 1.0), ("snare", snares, 0.8),
                                   ("hat", hats, 0.5), ("open_hat", open_hats, 0.4)):
            for slot in slots:
                accent = 1.0 if slot % 2 == 0 else 0.75
                when = song.slot_time(bar, slot) + rng.normal(0.0, 0.004)  # a human drummer
                add_at(out, kit[name] * level * accent * rng.uniform(0.8, 1.0), when)
    return out


def render_bass(song: Song, rng: np.random.Generator) -> np.ndarray:
    """Plucked notes on the chord roots (some fifths and octaves) in a per-track rhythm."""
    pattern = BASS_PATTERNS[rng.integers(len(BASS_PATTERNS))]
    legato, decay = rng.uniform(0.55, 0.95), rng.uniform(0.25, 0.7)
    amps = rng.uniform(0.4, 0.8) ** np.arange(5) / np.arange(1, 6)
    out = np.zeros(song.n_samples)
    for bar, chord in enumerate(song.chords):
        root = fold(song.midi(chord[0]), 28)  # E1..D#2, 41..78 Hz
        for i, slot in enumerate(pattern):
            length = ((pattern[i + 1] if i + 1 < len(pattern) else 8) - slot) * song.beat / 2
            note = root + int(rng.choice([0, 0, 0, 0, 7, 12]))  # mostly roots, some fifths/octaves
            add_at(out, pluck(midi_to_hz(note), length * legato, decay, amps, rng),
                   song.slot_time(bar, slot))
    return out


def render_other(song: Song, rng: np.random.Generator) -> np.ndarray:
    """Detuned, slowly attacking chord pads (one chord a bar) plus an arpeggio on top."""
    out = np.zeros(song.n_samples)
    bar_s = 4 * song.beat
    attack, release = rng.uniform(0.15, 0.45), 0.35
    detune = 2.0 ** (rng.uniform(4, 12) / 1200)  # cents between the two oscillators of a voice
    pad_amps = 1.0 / np.arange(1, 7) ** rng.uniform(1.3, 2.2)
    t = np.arange(int((bar_s + release) * SR)) / SR
    for bar, chord in enumerate(song.chords):
        pad = np.zeros(len(t))
        for degree in chord:
            freq = midi_to_hz(fold(song.midi(degree), 55))
            for ratio in (1 / detune, detune):
                pad += harmonic_sum(TWO_PI * freq * ratio * t + rng.uniform(0, TWO_PI), pad_amps)
        pad = fade_edges(pad, attack, release) / len(chord)
        add_at(out, pad, bar * bar_s)

    arp_slots = int(rng.choice([8, 16]))  # eighths or sixteenths
    order = ("up", "updown", "random")[rng.integers(3)]
    level, decay = rng.uniform(0.4, 0.7), rng.uniform(0.12, 0.3)
    amps = np.array([1.0, 0.35, 0.15, 0.05])
    for bar in range(int(rng.integers(2)), song.n_bars):
        notes = sorted(fold(song.midi(d), 67) for d in song.chords[bar])
        cycle = notes + notes[-2:0:-1] if order == "updown" else notes
        for i in range(arp_slots):
            note = cycle[i % len(cycle)] if order != "random" else int(rng.choice(notes))
            step = bar_s / arp_slots
            add_at(out, level * pluck(midi_to_hz(note), step, decay, amps, rng),
                   bar * bar_s + i * step)
    return out


def vocal_score(song: Song, rng: np.random.Generator):
    """Phrases of sung notes separated by ~1 s rests: [(start_s, end_s, midi, vowel)], phrases."""
    low = int(rng.choice([50, 57]))  # a lower or a higher voice, each about 17 semitones wide
    pitches = [m for m in range(low, low + 18) if (m - song.tonic) % 12 in song.scale]
    duration = song.n_samples / SR
    notes, phrases = [], []
    position = int(rng.integers(len(pitches) // 3, 2 * len(pitches) // 3))
    t = rng.uniform(0.4, 1.2)  # the voice enters after a short intro
    while t < duration:
        end = min(t + rng.uniform(1.5, 3.5), duration)
        phrases.append((t, end))
        while t < end - 0.05:
            length = float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])) * song.beat
            position += int(rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3]))
            position = abs(position) if position < len(pitches) else 2 * len(pitches) - 2 - position
            vowel = int(rng.integers(len(VOWELS)))
            notes.append((t, min(t + length, end), pitches[position], vowel))
            t += length
        t = end + rng.uniform(0.9, 1.5)
    return notes, phrases


def smooth(x: np.ndarray, seconds: float) -> np.ndarray:
    """Moving average over `seconds` along the last axis (edge-padded): steps become ramps."""
    width = max(1, int(seconds * SR / CONTROL_HOP))
    pad = [(0, 0)] * (x.ndim - 1) + [(width // 2, width - 1 - width // 2)]
    padded = np.pad(x, pad, mode="edge")
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="valid"), -1, padded)


def render_vocals(song: Song, rng: np.random.Generator) -> np.ndarray:
    """A harmonic voice through three moving formants, with glides, vibrato and rests."""
    notes, phrases = vocal_score(song, rng)
    n_ctrl = song.n_samples // CONTROL_HOP + 2
    t_ctrl = np.arange(n_ctrl) * CONTROL_HOP / SR
    pitch, vibrato_amount = np.full(n_ctrl, float(notes[0][2]) if notes else 60.0), np.zeros(n_ctrl)
    formants, envelope = np.tile(VOWELS[0][:, None], n_ctrl), np.zeros(n_ctrl)
    formant_scale = rng.uniform(0.95, 1.12)  # vocal tract length of this singer
    for start, end, midi, vowel in notes:
        i0, i1 = (int(round(x * SR / CONTROL_HOP)) for x in (start, end))
        pitch[i0:] = midi  # held through the following rest until the next note
        vibrato_amount[i0:i1] = np.clip((t_ctrl[i0:i1] - start) / 0.2, 0, 1)  # vibrato grows
        formants[:, i0:] = VOWELS[vowel][:, None] * formant_scale
        envelope[i0:i1] = rng.uniform(0.7, 1.0)
        dip = min(i1 - i0, int(0.06 * SR / CONTROL_HOP))  # a consonant-like dip at each onset
        envelope[i0 : i0 + dip] *= 0.35 + 0.65 * np.linspace(0, 1, dip)
    gate = np.zeros(n_ctrl)
    for start, end in phrases:
        i0, i1 = (int(round(x * SR / CONTROL_HOP)) for x in (start, end))
        # 40 ms fade-in and 80 ms fade-out (fade_edges counts audio samples, these are hops)
        gate[i0:i1] = fade_edges(np.ones(i1 - i0), 0.04 / CONTROL_HOP, 0.08 / CONTROL_HOP)
    vibrato_rate, vibrato_phase = rng.uniform(5.0, 6.0), rng.uniform(0, TWO_PI)
    vibrato = rng.uniform(0.25, 0.6) * np.sin(TWO_PI * vibrato_rate * t_ctrl + vibrato_phase)
    drift = smooth(np.cumsum(rng.normal(0, 0.01, n_ctrl)), 0.5)  # slow intonation wander
    pitch = smooth(pitch, rng.uniform(0.05, 0.12)) + vibrato * vibrato_amount + drift - drift.mean()
    f0_ctrl = midi_to_hz(pitch)
    formants = smooth(formants, 0.06)
    envelope = smooth(envelope, 0.02) * gate  # exact zeros outside phrases stay zeros

    samples = np.arange(song.n_samples)
    f0 = np.interp(samples, samples[::CONTROL_HOP], f0_ctrl[: len(samples[::CONTROL_HOP])])
    phase = TWO_PI * np.cumsum(f0) / SR
    amplitude = np.interp(samples, samples[::CONTROL_HOP], envelope[: len(samples[::CONTROL_HOP])])
    voiced = np.flatnonzero(amplitude > 0)
    out = np.zeros(song.n_samples)
    if len(voiced) == 0:
        return out
    # Per-harmonic gains on the control grid, linearly interpolated to the voiced samples.
    position = voiced / CONTROL_HOP
    index = position.astype(int)
    weight = position - index
    two_cos, current = 2 * np.cos(phase[voiced]), np.sin(phase[voiced])
    previous, voice = np.zeros(len(voiced)), np.zeros(len(voiced))
    for k in range(1, int(6000 / f0_ctrl.min()) + 1):
        freq = k * f0_ctrl
        resonance = FORMANT_GAINS / (1 + ((freq - formants) / (FORMANT_BANDWIDTHS / 2)) ** 2)
        gain = (resonance.sum(axis=0) + 0.02) / k ** 0.5 / (1 + (freq / 5000) ** 4)
        voice += (gain[index] * (1 - weight) + gain[index + 1] * weight) * current
        previous, current = current, two_cos * current - previous
    out[voiced] = voice * amplitude[voiced]
    return out


RENDERERS = {"drums": render_drums, "bass": render_bass, "other": render_other,
             "vocals": render_vocals}
# Per source: (gain range in dB, pan range, largest inter-channel delay in samples for width).
MIX_RANGES = {"drums": ((-3, 0), 0.3, 8), "bass": ((-4, 0), 0.15, 0),
              "other": ((-7, -2), 0.7, 30), "vocals": ((-3, 0), 0.2, 4)}


def track_rngs(seed: int, subset: str, name: str) -> dict[str, np.random.Generator]:
    """Independent generators ("song", "mix" and one a source) for one track.

    Seeded from SHA-256 of the values, never Python's salted hash(); one stream a part, so a
    change in how one stem is drawn leaves the others as they were.
    """
    digest = hashlib.sha256(f"{seed}\x00{subset}\x00{name}".encode()).digest()
    root = np.random.SeedSequence(np.frombuffer(digest, dtype="<u4").tolist())
    parts = ("song", "mix", *SOURCES)
    return {part: np.random.default_rng(s) for part, s in zip(parts, root.spawn(len(parts)))}


def to_stereo(mono: np.ndarray, pan: float, delay: int) -> np.ndarray:
    """Constant-power pan in [-1, 1], one channel delayed by |delay| samples; (samples, 2)."""
    angle = (pan + 1) * np.pi / 4
    shift = abs(delay)
    delayed = np.concatenate([np.zeros(shift), mono[: len(mono) - shift]])
    left, right = (mono, delayed) if delay >= 0 else (delayed, mono)
    return np.stack([np.cos(angle) * left, np.sin(angle) * right], axis=1)


def synthesize_track(seed: int, subset: str, name: str, duration: float) -> dict[str, np.ndarray]:
    """All five stems of one track as int16 (samples, 2); mixture == exact sum of the sources."""
    rngs = track_rngs(seed, subset, name)
    song = plan_song(rngs["song"], int(round(duration * SR)))
    mix_rng = rngs["mix"]
    stems = {}
    for source in SOURCES:
        mono = RENDERERS[source](song, rngs[source])
        active = mono[mono != 0]
        rms = np.sqrt(np.mean(active**2)) if len(active) else 1.0
        (low, high), pan_range, max_delay = MIX_RANGES[source]
        gain = 10 ** (mix_rng.uniform(low, high) / 20) / rms
        pan = mix_rng.uniform(-pan_range, pan_range)
        delay = int(mix_rng.integers(-max_delay, max_delay + 1))
        stems[source] = to_stereo(mono * gain, pan, delay)
    # One scale for all stems: the float mixture peaks at the target level, so that the sum of
    # the rounded stems (off by at most 2 LSB) can never clip.
    peak = max(np.abs(sum(stems.values())).max(), *(np.abs(s).max() for s in stems.values()), 1e-9)
    scale = mix_rng.uniform(0.5, 0.9) * 32767 / peak
    out = {s: np.round(stems[s] * scale).astype(np.int16) for s in SOURCES}
    total = np.sum([out[s].astype(np.int32) for s in SOURCES], axis=0)
    assert np.abs(total).max() <= 32767, "mixture would clip"  # guaranteed by the scale above
    out["mixture"] = total.astype(np.int16)
    return out


def track_list(train_tracks: int, valid_tracks: int, test_tracks: int) -> list[tuple[str, str]]:
    """(subset, name) of every track to generate, in MUSDB18's split."""
    for option, value, limit in (("--train-tracks", train_tracks, len(TRAIN_SPLIT_TRACKS)),
                                 ("--valid-tracks", valid_tracks, len(VALID_TRACKS)),
                                 ("--test-tracks", test_tracks, len(TEST_TRACKS))):
        if not 0 <= value <= limit:
            raise ConfigError(f"{option} {value}: MUSDB18 has {limit} such tracks; use 0..{limit}")
    return ([("train", n) for n in TRAIN_SPLIT_TRACKS[:train_tracks]]
            + [("train", n) for n in VALID_TRACKS[:valid_tracks]]
            + [("test", n) for n in TEST_TRACKS[:test_tracks]])


def generate_dataset(out: Path, seed: int, train_tracks: int, valid_tracks: int, test_tracks: int,
                     duration: float, overwrite: bool = False) -> None:
    """Write out/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav (44.1 kHz, stereo,
    PCM_16) into a temporary folder renamed onto `out` only once every file is complete."""
    from tqdm import tqdm

    out = Path(out)
    tracks = track_list(train_tracks, valid_tracks, test_tracks)
    if not (math.isfinite(duration) and duration > 0):
        raise ConfigError(f"--duration {duration}: give a positive number of seconds")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists; delete it or pass --overwrite")
    with atomic_dir(out) as tmp:
        for subset in ("train", "test"):
            (tmp / subset).mkdir()
        for subset, name in tqdm(tracks, desc="synth", unit="track"):
            stems = synthesize_track(seed, subset, name, duration)
            (tmp / subset / name).mkdir()
            for stem in STEMS:
                write_wav(tmp / subset / name / f"{stem}.wav", stems[stem], SR)
    log.info("wrote %d synthetic tracks of %.1f s to %s (seed %d)",
             len(tracks), duration, out, seed)


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    parser.add_argument("--seed", type=int, default=2021,
                        help="same seed, same bytes (default 2021)")
    parser.add_argument("--train-tracks", type=int, default=6,
                        help="tracks of the official train split (0..86)")
    parser.add_argument("--valid-tracks", type=int, default=2,
                        help="tracks of the official validation split (0..14)")
    parser.add_argument("--test-tracks", type=int, default=3, help="test tracks (0..50)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds a track (default 12)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args) -> int:
    generate_dataset(args.out, args.seed, args.train_tracks, args.valid_tracks, args.test_tracks,
                     args.duration, overwrite=args.overwrite)
    return 0
