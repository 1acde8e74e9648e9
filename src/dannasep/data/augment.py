"""Pitch and tempo augmentation of training stems, as the authors applied it.

Danna-Sep (transform.py of yoyololicon/music-demixing-challenge-ismir-2021-entry), per stem with
probability p each, pitch first, then speed:
* pitch shift by a semitone count drawn from [-2, -1, 0, 1, 2]: a phase-vocoder time stretch
  (STFT 2048 / hop 512) by `rate`, then resampling from `rr` to 100 samples, where
  rr = round(100 * 2^(s/12)) made even and rate = 100 / rr (their rounding, kept: +2 semitones
  is a factor 1.12, not 1.1225);
* speed perturbation to 90, 100 or 110 %: resampling from 44100 to 44100 * percent / 100 Hz
  (tempo and pitch change together);
* the result is cut, or zero-padded at its end, to the input length.
Demucs v2 (demucs/repitch.py), for a whole item with probability p, every stem alike: pitch by
a whole number of semitones in [-2, 2] and tempo by N(0, 5) % clipped to +-12 %; its
`soundstretch` (SoundTouch, WSOLA) is replaced here by the same phase vocoder and resampler.

The authors ran torchaudio's TimeStretch and julius's ResampleFrac on GPU batches; here the
phase vocoder is torchaudio's algorithm on `torch.stft` (torchaudio's wheel does not load beside
this torch), resampling is julius's, and everything runs per item in the data loader, so the
draws are part of an item's seeded random choices (deterministic for any worker count).
Arrays are float32 [channels, samples].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import dsp

PV_N_FFT, PV_HOP = 2048, 512


def pitch_ratio(semitones: int) -> tuple[int, int]:
    """(rr, 100): the authors' resampling fraction for a shift of `semitones` (rr even)."""
    rr = int(100 * 2 ** (semitones / 12))  # their .long() truncates
    return (rr + 1 if rr % 2 else rr), 100


def phase_vocoder(spec: torch.Tensor, rate: float, hop: int) -> torch.Tensor:
    """Time-stretch complex spec [..., bins, frames] by `rate` (> 1: shorter), torchaudio's way.

    Magnitudes and phases are taken once and gathered by indexing (gathering complex frames
    costs several times more), the same numbers as torchaudio's phase_vocoder.
    """
    bins = spec.shape[-2]
    steps = torch.arange(0, spec.shape[-1], rate, dtype=torch.float64)
    alphas = (steps % 1.0).to(spec.real.dtype)
    advance = torch.linspace(0, math.pi * hop, bins, dtype=spec.real.dtype)[:, None]
    padded = torch.nn.functional.pad(spec, [0, 2])
    mag, angle = padded.abs(), padded.angle()
    first, second = steps.long(), steps.long() + 1
    phase = angle[..., second] - angle[..., first] - advance
    phase = phase - 2 * math.pi * torch.round(phase / (2 * math.pi)) + advance
    phase = torch.cat([angle[..., :1], phase[..., :-1]], dim=-1).cumsum(-1)
    return torch.polar(alphas * mag[..., second] + (1 - alphas) * mag[..., first], phase)


def time_stretch(audio: torch.Tensor, rate: float) -> torch.Tensor:
    """[channels, samples] -> about samples / rate samples, same pitch."""
    spec = dsp.stft(audio, PV_N_FFT, PV_HOP)
    stretched = phase_vocoder(spec, rate, PV_HOP)
    length = (stretched.shape[-1] - 1) * PV_HOP
    return dsp.istft(stretched, PV_N_FFT, PV_HOP, length=length)


def _resample(audio: torch.Tensor, old: int, new: int) -> torch.Tensor:
    import julius

    return julius.resample_frac(audio, old, new)


def fit_length(audio: torch.Tensor, length: int) -> torch.Tensor:
    """Cut, or zero-pad at the end, to `length` samples (the authors' rule)."""
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return torch.nn.functional.pad(audio, [0, length - audio.shape[-1]])


def pitch_shift(audio: torch.Tensor, semitones: int) -> torch.Tensor:
    """Danna-Sep's RandomPitch for one stem, length kept."""
    if semitones == 0:  # rate 1 still runs the vocoder in theirs; it is the identity up to rounding
        return audio
    rr, base = pitch_ratio(semitones)
    shifted = _resample(time_stretch(audio, base / rr), rr, base)
    return fit_length(shifted, audio.shape[-1])


def speed_perturb(audio: torch.Tensor, percent: int, sample_rate: int = 44100) -> torch.Tensor:
    """Danna-Sep's SpeedPerturb for one stem, length kept."""
    if percent == 100:
        return audio
    return fit_length(_resample(audio, sample_rate, sample_rate * percent // 100), audio.shape[-1])


def repitch(audio: torch.Tensor, semitones: int, tempo_percent: float) -> torch.Tensor:
    """Demucs v2's pitch (semitones) and tempo (+10 = 110 % speed) change, length kept.

    Pitch without tempo change is a stretch by 1/f followed by resampling by f
    (f = 2^(s/12), as a fraction of integers over 100); the tempo change is folded into the
    stretch rate.
    """
    if semitones == 0 and tempo_percent == 0:
        return audio
    factor_num, factor_den = (round(100 * 2 ** (semitones / 12)), 100)
    rate = (1 + tempo_percent / 100) * factor_den / factor_num
    stretched = time_stretch(audio, rate)
    if factor_num != factor_den:
        stretched = _resample(stretched, factor_num, factor_den)
    return fit_length(stretched, audio.shape[-1])


def draw_tempo(rng: np.random.Generator, std: float, bound: float) -> float:
    """Demucs v2's tempo draw: N(0, std) clipped to [-bound, bound] percent."""
    return float(min(max(-bound, rng.normal(0.0, std)), bound))


@dataclass(frozen=True)
class PitchTempo:
    """The pitch and tempo settings of one system (config `data.pitch`, `.speed`, `.repitch`)."""

    pitch_p: float = 0.0
    semitones: tuple[int, ...] = (-2, -1, 0, 1, 2)
    speed_p: float = 0.0
    percents: tuple[int, ...] = (90, 100, 110)
    repitch_p: float = 0.0
    max_pitch: int = 2
    max_tempo: float = 12.0
    tempo_std: float = 5.0

    @classmethod
    def from_config(cls, data_cfg: dict) -> "PitchTempo":
        pitch, speed, rep = (data_cfg.get(k) or {} for k in ("pitch", "speed", "repitch"))
        return cls(pitch_p=pitch.get("p", 0.0), semitones=tuple(pitch.get("semitones", cls.semitones)),
                   speed_p=speed.get("p", 0.0), percents=tuple(speed.get("percents", cls.percents)),
                   repitch_p=rep.get("p", 0.0), max_pitch=rep.get("max_pitch", 2),
                   max_tempo=rep.get("max_tempo", 12.0), tempo_std=rep.get("tempo_std", 5.0))

    @property
    def active(self) -> bool:
        return max(self.pitch_p, self.speed_p, self.repitch_p) > 0

    def draw(self, rng: np.random.Generator, n: int):
        """Per stem (semitones or None, percent or None) and the item's repitch or None.

        The same values are drawn whatever the probabilities, so changing one setting leaves
        every other draw of the item as it was.
        """
        pitch_u, pitch_i = rng.random(n), rng.integers(len(self.semitones), size=n)
        speed_u, speed_i = rng.random(n), rng.integers(len(self.percents), size=n)
        rep_u, rep_pitch = rng.random(), int(rng.integers(-self.max_pitch, self.max_pitch + 1))
        rep_tempo = draw_tempo(rng, self.tempo_std, self.max_tempo)
        semitones = [int(self.semitones[i]) if u < self.pitch_p else None for u, i in zip(pitch_u, pitch_i)]
        speeds = [int(self.percents[i]) if u < self.speed_p else None for u, i in zip(speed_u, speed_i)]
        item = (rep_pitch, rep_tempo) if rep_u < self.repitch_p else None
        return semitones, speeds, item

    @staticmethod
    def apply(audio: np.ndarray, semitones: int | None, speed: int | None,
              item: tuple[int, float] | None) -> np.ndarray:
        """One stem [channels, samples] float32 through its draws, length kept."""
        if semitones is None and speed is None and item is None:
            return audio
        x = torch.from_numpy(np.ascontiguousarray(audio))
        if semitones is not None:
            x = pitch_shift(x, semitones)
        if speed is not None:
            x = speed_perturb(x, speed)
        if item is not None:
            x = repitch(x, *item)
        return x.numpy().astype(np.float32, copy=False)
