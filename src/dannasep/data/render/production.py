"""Produce each stem like a record (EQ, compression, reverb, stereo) and balance the mix.

Stems are balanced by loudness, measured with pyloudnorm (ITU-R BS.1770-4, gated integrated
loudness): the mixture's target and each stem's level relative to it are drawn per track from
LOUDNESS below. MUSDB18-HQ's mixtures are the plain sum of its stems; so is ours. The
effects are pedalboard's (JUCE filters, compressor and reverb), all deterministic.
"""

from __future__ import annotations

import numpy as np
import pedalboard as pb
import pyloudnorm

from ...constants import SAMPLE_RATE, SOURCES

# Loudness spread (LUFS): mixture ~ N(mean, sd) clipped to [low, high]; each stem relative to
# the mixture (LU) ~ N(mean, sd). An estimate of MUSDB18-HQ's spread (its mixtures are not
# mastered loud, vocals usually lead, bass and drums sit a few LU below), not a measurement:
# `measure_loudness(root)` computes these statistics for a real copy, to replace them.
LOUDNESS = {"mixture": (-14.0, 2.0, -20.0, -9.0),
            "drums": (-6.5, 2.0), "bass": (-8.0, 2.0), "other": (-6.0, 2.0), "vocals": (-4.0, 1.5)}
PEAK_CEILING = 0.98  # full scale; the whole mix is lowered if a stem or the mixture would pass it


def chain(source: str, rng: np.random.Generator) -> pb.Pedalboard:
    """A mixing engineer's chain for one stem, with per-track settings."""
    u = rng.uniform
    if source == "drums":
        fx = [pb.HighpassFilter(u(30, 45)), pb.PeakFilter(u(55, 80), u(1, 4), 1.0),
              pb.PeakFilter(u(300, 500), -u(1, 4), 1.2), pb.HighShelfFilter(u(6000, 9000), u(0, 4)),
              pb.Compressor(u(-20, -12), u(3, 6), u(5, 20), u(80, 200)),
              pb.Reverb(u(0.15, 0.35), 0.5, u(0.04, 0.12), 1.0, u(0.6, 1.0))]
    elif source == "bass":
        fx = [pb.HighpassFilter(u(30, 40)), pb.LowShelfFilter(u(80, 120), u(0, 3)),
              pb.PeakFilter(u(700, 1000), u(-3, 2), 1.0), pb.LowpassFilter(u(2500, 6000)),
              pb.Compressor(u(-22, -14), u(4, 8), u(10, 30), u(100, 250))]
    elif source == "other":
        fx = [pb.HighpassFilter(u(90, 160)), pb.PeakFilter(u(250, 450), -u(1, 4), 1.0),
              pb.HighShelfFilter(u(5000, 8000), u(0, 3)), pb.Compressor(u(-20, -14), u(2, 3), u(20, 40), u(150, 300)),
              pb.Reverb(u(0.4, 0.75), u(0.3, 0.6), u(0.12, 0.3), 1.0, 1.0)]
    elif source == "vocals":
        fx = [pb.HighpassFilter(u(80, 120)), pb.PeakFilter(u(200, 350), -u(1, 3), 1.0),
              pb.PeakFilter(u(2500, 4000), u(1, 4), 0.8), pb.HighShelfFilter(u(9000, 12000), u(0, 3)),
              pb.Compressor(u(-24, -16), u(3, 5), u(2, 8), u(60, 150)),
              pb.Reverb(u(0.3, 0.6), u(0.4, 0.7), u(0.08, 0.2), 1.0, u(0.7, 1.0))]
    else:
        raise ValueError(f"unknown source {source!r}")
    return pb.Pedalboard(fx)


# Stereo placement: (largest |pan|, width range) per source; width scales the side signal.
PLACEMENT = {"drums": (0.1, (0.8, 1.1)), "bass": (0.05, (0.0, 0.3)),
             "other": (0.3, (0.9, 1.3)), "vocals": (0.1, (0.3, 0.7))}


def place(audio: np.ndarray, source: str, rng: np.random.Generator) -> np.ndarray:
    """Mid/side width, then a constant-power pan; (samples, 2)."""
    max_pan, (w0, w1) = PLACEMENT[source]
    pan, width = rng.uniform(-max_pan, max_pan), rng.uniform(w0, w1)
    mid, side = (audio[:, 0] + audio[:, 1]) / 2, (audio[:, 0] - audio[:, 1]) / 2 * width
    angle = (pan + 1) * np.pi / 4
    return np.stack([(mid + side) * np.cos(angle) * np.sqrt(2), (mid - side) * np.sin(angle) * np.sqrt(2)], axis=1)


def produce(audio: np.ndarray, source: str, rng: np.random.Generator) -> np.ndarray:
    """One stem through its chain and placement; float32 (samples, 2) in and out."""
    board = chain(source, rng)
    processed = board(np.ascontiguousarray(audio.T, dtype=np.float32), SAMPLE_RATE, reset=True).T
    return place(processed.astype(np.float64), source, rng)


_METER = None


def loudness(audio: np.ndarray) -> float:
    """Gated integrated loudness in LUFS (-inf for silence or < 0.4 s)."""
    global _METER
    if _METER is None:
        _METER = pyloudnorm.Meter(SAMPLE_RATE)  # BS.1770-4 K-weighting, 400 ms blocks
    if len(audio) < int(0.4 * SAMPLE_RATE) or not np.any(audio):
        return float("-inf")
    with np.errstate(divide="ignore"):
        return float(_METER.integrated_loudness(audio))


def balance(stems: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scale each stem to its drawn loudness, then the mix to its drawn loudness and peak."""
    mean, sd, low, high = LOUDNESS["mixture"]
    mix_target = float(np.clip(rng.normal(mean, sd), low, high))
    scaled = {}
    for source in SOURCES:
        offset = rng.normal(*LOUDNESS[source])
        measured = loudness(stems[source])
        gain = 10 ** ((mix_target + offset - measured) / 20) if np.isfinite(measured) else 0.0
        scaled[source] = stems[source] * gain
    mixture = sum(scaled.values())
    measured = loudness(mixture)
    gain = 10 ** ((mix_target - measured) / 20) if np.isfinite(measured) else 1.0
    peak = max(np.abs(mixture).max(), *(np.abs(s).max() for s in scaled.values())) * gain
    if peak > PEAK_CEILING:
        gain *= PEAK_CEILING / peak
    return {s: scaled[s] * gain for s in SOURCES}


def to_pcm16(stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int16 stems and their exact int16 sum as the mixture (the ceiling leaves room for rounding)."""
    out = {s: np.clip(np.round(stems[s] * 32768), -32768, 32767).astype(np.int16) for s in SOURCES}
    total = np.sum([out[s].astype(np.int32) for s in SOURCES], axis=0)
    if np.abs(total).max() > 32767:
        raise AssertionError("mixture would clip")  # prevented by PEAK_CEILING in balance()
    out["mixture"] = total.astype(np.int16)
    return out


def measure_loudness(root) -> dict[str, tuple[float, float]]:
    """(mean, sd) over the tracks of root/{train,test}/<track>/: the mixture's loudness in LUFS,
    each stem's relative to it in LU (silent stems left out). Run it on a real MUSDB18-HQ to
    replace the estimates in LOUDNESS."""
    from pathlib import Path

    import soundfile as sf

    values: dict[str, list[float]] = {s: [] for s in ("mixture", *SOURCES)}
    for folder in sorted(Path(root).glob("*/*/")):
        mixture = loudness(sf.read(str(folder / "mixture.wav"), dtype="float64")[0])
        values["mixture"].append(mixture)
        for source in SOURCES:
            level = loudness(sf.read(str(folder / f"{source}.wav"), dtype="float64")[0])
            if np.isfinite(level) and np.isfinite(mixture):
                values[source].append(level - mixture)
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in values.items() if v}
