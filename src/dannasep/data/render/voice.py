"""Sung syllables: espeak-ng's consonants and vowel colours shaped onto the sampled voice.

A GM voice program sings the melody with its own "aah" or "ooh" only. espeak-ng (a formant
speech synthesizer, deterministic) speaks each syllable of the song's lyrics once; from it we
take (1) the spectral envelope of its vowel and of the voiced consonant leading into it
("l", "m", "n", "w", ...), imposed frame by frame on the sampled voice by cross-synthesis
(cepstral envelopes: the voice keeps its pitch, vibrato and breathiness, and gets the
syllable's formants), and (2) the unvoiced onset ("t", "k", "s", "sh", "h" bursts and
hiss), mixed in just before the note, since noise cannot be shaped out of a harmonic voice.
Breaths are band-passed noise in the gaps before phrases.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import numpy as np
import soxr
from scipy import fft, signal

from ...constants import SAMPLE_RATE
from ...errors import DataError
from .melody import VocalLine

N_FFT, HOP = 2048, 512  # 46 ms frames, 75 % overlap (Hann: constant overlap-add)
WINDOW = np.hanning(N_FFT + 1)[:N_FFT].astype(np.float32)  # periodic Hann
LIFTER = 24              # cepstral coefficients kept: envelopes, not harmonics (f0 < 900 Hz)
SHAPE_AMOUNT = 0.8       # how far the voice's envelope moves to the syllable's (1 = all the way)
MAX_CUT_DB, MAX_BOOST_DB = 24.0, 9.0  # boosting more would lift the sample's breath noise, not formants
TRANSITION_S = 0.08      # at most this much of a voiced consonant leads into the vowel
ESPEAK_RATE_WPM = 110


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=512)
def speak(phonemes: str, voice: str) -> np.ndarray:
    """espeak-ng's rendering of one syllable (phoneme mnemonics), mono float64 at 44.1 kHz."""
    if not espeak_available():
        raise DataError("espeak-ng not found on PATH; install Debian's espeak-ng (make setup does)")
    result = subprocess.run(["espeak-ng", "-v", voice, "-s", str(ESPEAK_RATE_WPM), "--stdout", f"[[{phonemes}]]"],
                            capture_output=True, check=False)
    raw = result.stdout
    if result.returncode != 0 or raw[:4] != b"RIFF" or raw[36:40] != b"data":
        raise DataError(f"espeak-ng -v {voice} failed on [[{phonemes}]]: {result.stderr.decode(errors='replace').strip()}")
    rate = int.from_bytes(raw[24:28], "little")
    audio = np.frombuffer(raw[44 : 44 + (len(raw) - 44) // 2 * 2], dtype="<i2").astype(np.float64) / 32768
    audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    active = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[active[0] : active[-1] + 1] if len(active) else audio


def frames(x: np.ndarray) -> np.ndarray:
    """Hann-windowed spectra (..., frames, bins); frame k centred at sample k * HOP."""
    x = np.asarray(x, dtype=np.float32)
    n_frames = x.shape[-1] // HOP + 1
    pad = [(0, 0)] * (x.ndim - 1) + [(N_FFT // 2, N_FFT // 2 + HOP)]
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad), N_FFT, axis=-1)[..., ::HOP, :][..., :n_frames, :]
    return fft.rfft(windows * WINDOW, axis=-1)


def overlap_add(spec: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `frames`: windowed overlap-add normalised by the summed squared window."""
    chunks = fft.irfft(spec, n=N_FFT, axis=-1).astype(np.float32) * WINDOW
    n_frames = chunks.shape[-2]
    total = (n_frames - 1) * HOP + N_FFT
    out = np.zeros(chunks.shape[:-2] + (total,), dtype=np.float32)
    norm = np.zeros(total, dtype=np.float32)
    for k in range(N_FFT // HOP):  # frames k, k + 4, ... do not overlap each other
        idx = np.arange(k, n_frames, N_FFT // HOP)
        block = chunks[..., idx, :].reshape(chunks.shape[:-2] + (-1,))
        start = k * HOP
        out[..., start : start + block.shape[-1]] += block
        norm[start : start + block.shape[-1]] += np.tile(WINDOW**2, len(idx))
    out /= np.maximum(norm, 1e-3)
    return out[..., N_FFT // 2 : N_FFT // 2 + n]


def envelope(spec: np.ndarray) -> np.ndarray:
    """Cepstrally smoothed log magnitude envelope of each frame (natural log)."""
    log_mag = np.log(np.abs(spec) + 1e-9)
    cepstrum = fft.irfft(log_mag, n=N_FFT, axis=-1)
    cepstrum[..., LIFTER : N_FFT - LIFTER + 1] = 0.0
    return fft.rfft(cepstrum, axis=-1).real[..., : spec.shape[-1]]


def voiced_frames(x: np.ndarray) -> np.ndarray:
    """Per STFT frame: periodic (normalised autocorrelation peak > 0.5 at 70-500 Hz lags) and loud."""
    n = len(x) // HOP + 1
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2))
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n] * np.hanning(N_FFT)
    spec = np.fft.rfft(windows, n=2 * N_FFT, axis=-1)
    acf = np.fft.irfft(np.abs(spec) ** 2, axis=-1)[:, :N_FFT]
    lags = slice(SAMPLE_RATE // 500, SAMPLE_RATE // 70)
    peak = acf[:, lags].max(axis=-1) / np.maximum(acf[:, 0], 1e-12)
    energy = acf[:, 0]
    return (peak > 0.5) & (energy > energy.max() * 1e-3)


@functools.lru_cache(maxsize=512)
def syllable_model(phonemes: str, voice: str):
    """(unvoiced onset audio, voiced-transition envelopes + levels, vowel envelope)."""
    audio = speak(phonemes, voice)
    voiced = voiced_frames(audio)
    if not voiced.any():  # should not happen for a syllable with a vowel; keep the voice's own
        return audio[:0], np.zeros((0, N_FFT // 2 + 1)), np.zeros(0), None
    first, last = np.flatnonzero(voiced)[[0, -1]]
    onset = audio[: first * HOP]
    spec = frames(audio)
    env = envelope(spec)
    vowel_frames = slice(first + int(0.4 * (last - first)), first + int(0.8 * (last - first)) + 1)
    vowel = np.median(env[vowel_frames], axis=0)
    n_transition = min(int(TRANSITION_S * SAMPLE_RATE / HOP), max(0, vowel_frames.start - first))
    transition = env[first : first + n_transition]
    energy = (np.abs(spec) ** 2).sum(axis=-1)
    levels = np.sqrt(energy[first : first + n_transition] / max(np.median(energy[vowel_frames]), 1e-12))
    return onset, transition, np.clip(levels, 0.25, 1.0), vowel


def band_mean(env: np.ndarray) -> np.ndarray:
    """Mean of the log envelope over 200 Hz-4 kHz (the level the shaping keeps)."""
    bins = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    return env[..., (bins > 200) & (bins < 4000)].mean(axis=-1, keepdims=True)


def shape_syllables(voice: np.ndarray, line: VocalLine) -> np.ndarray:
    """Cross-synthesis: each note's frames get its syllable's envelope; (samples, 2) in and out."""
    n = len(voice)
    spec = frames(voice.T)                          # (2, frames, bins)
    own = envelope(spec.mean(axis=0))               # the sampled voice's envelope (mid)
    target, gain = own.copy(), np.ones(own.shape[0])
    for note, syllable in zip(line.instrument.notes, line.syllables):
        _, transition, levels, vowel = syllable_model(syllable, line.espeak_voice)
        if vowel is None:
            continue
        k0 = int(round(note.start * SAMPLE_RATE / HOP))
        k1 = min(int(round((note.end + 0.25) * SAMPLE_RATE / HOP)), own.shape[0])  # through the release
        if k0 >= k1:
            continue
        target[k0:k1] = vowel
        m = min(len(transition), (k1 - k0) // 3)
        target[k0 : k0 + m] = transition[:m]
        gain[k0 : k0 + m] = levels[:m]
    target = smooth_frames(target)  # no zipper noise at frame changes
    target = target - band_mean(target) + band_mean(own)
    correction = np.clip(SHAPE_AMOUNT * (target - own), -MAX_CUT_DB / 8.686, MAX_BOOST_DB / 8.686)
    shaped = spec * (np.exp(correction) * smooth_frames(gain[:, None])).astype(np.complex64)
    return overlap_add(shaped, n).T


def smooth_frames(x: np.ndarray) -> np.ndarray:
    """Three-frame moving average along axis 0 (edges repeated)."""
    padded = np.concatenate([x[:1], x, x[-1:]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3


def add_at(out: np.ndarray, sound: np.ndarray, start: int) -> None:
    """Add mono `sound` to both channels of `out` from sample `start` (clipped to the ends)."""
    lo, hi = max(start, 0), min(start + len(sound), len(out))
    if hi > lo:
        out[lo:hi] += sound[lo - start : hi - start, None]


def consonants_and_breaths(shaped: np.ndarray, line: VocalLine, rng: np.random.Generator) -> np.ndarray:
    """The unvoiced onsets before their notes and breaths before phrases; (samples, 2)."""
    out = np.zeros_like(shaped)
    mid = shaped.mean(axis=1)
    active = np.abs(mid) > 1e-4
    voice_rms = np.sqrt(np.mean(mid[active] ** 2)) if active.any() else 0.0
    for note, syllable in zip(line.instrument.notes, line.syllables):
        onset, *_ , vowel = syllable_model(syllable, line.espeak_voice)
        if len(onset) < 64 or vowel is None:
            continue
        speech = speak(syllable, line.espeak_voice)
        ratio = np.sqrt(np.mean(onset**2) / max(np.mean(speech[len(onset):] ** 2), 1e-12))
        s0, s1 = int(note.start * SAMPLE_RATE), int(min(note.end, note.start + 0.3) * SAMPLE_RATE)
        note_rms = np.sqrt(np.mean(mid[s0:s1] ** 2)) if s1 > s0 else voice_rms
        burst = onset / max(np.sqrt(np.mean(onset**2)), 1e-12) * ratio * note_rms
        fade = min(len(burst), int(0.01 * SAMPLE_RATE))
        burst[-fade:] *= np.linspace(1, 0, fade)
        add_at(out, burst, s0 + int(0.01 * SAMPLE_RATE) - len(burst))
    sos = signal.butter(2, (500, 6000), btype="bandpass", fs=SAMPLE_RATE, output="sos")
    for start, seconds in line.breaths:
        n = int(seconds * SAMPLE_RATE)
        if n < 32:
            continue
        noise = signal.sosfilt(sos, rng.standard_normal(n))
        shape = np.sin(np.pi * np.linspace(0, 1, n) ** 0.7) ** 2  # quicker in than out
        level = voice_rms * 10 ** (rng.uniform(-26, -18) / 20) / max(np.sqrt(np.mean(noise**2)), 1e-12)
        add_at(out, noise * shape * level, int(start * SAMPLE_RATE))
    return out


def sing(voice: np.ndarray, line: VocalLine, rng: np.random.Generator) -> np.ndarray:
    """The vocal stem before production: the shaped voice plus consonants and breaths."""
    if not line.instrument.notes:
        return voice
    shaped = shape_syllables(voice, line)
    return shaped + consonants_and_breaths(shaped, line, rng)
