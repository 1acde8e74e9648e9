"""Chunked separation (dannasep.separation): overlap-add against whole-signal references.

Stand-in models with known outputs make the expected result computable without the chunking:
memoryless linear maps (per-source channel-mixing matrices) must come out exactly (to float32
rounding) for any chunk/overlap/length; a causal FIR filter is compared with scipy.signal.lfilter
on the whole signal; a TF "model" returning scaled mixture magnitudes goes through the real
STFT -> Wiener -> ISTFT path, whose output is then a known gain of the mixture.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch
from torch import nn

from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.separation.chunking import crossfade_window, overlap_add
from dannasep.separation.inference import ChunkInference, separate_array
from dannasep.separation.files import separate_file

N_SOURCES = len(SOURCES)


class ChannelMixModel(nn.Module):
    """T model: source s = M_s @ mixture, a memoryless linear map. [B, C, L] -> [B, S, C, L]."""

    domain = "t"

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.register_buffer("mixing", torch.from_numpy(rng.uniform(-1, 1, (N_SOURCES, 2, 2))).float())

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return torch.einsum("scd,bdl->bscl", self.mixing, mix)

    def reference(self, mix: np.ndarray) -> np.ndarray:
        """The same map on the whole mixture [L, C] in float64: [S, L, C]."""
        return np.einsum("scd,ld->slc", self.mixing.double().numpy(), mix.astype(np.float64))


class CausalFIRModel(nn.Module):
    """T model: source s = h_s * mixture (causal FIR, zero initial state), per channel."""

    domain = "t"

    def __init__(self, taps: int, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.taps = rng.standard_normal((N_SOURCES, taps)) / taps

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        batch, channels, length = mix.shape
        kernel = torch.from_numpy(self.taps[:, ::-1].copy()).to(mix.dtype)[:, None]  # [S, 1, K]
        padded = nn.functional.pad(mix.reshape(-1, 1, length), (self.taps.shape[1] - 1, 0))
        out = nn.functional.conv1d(padded, kernel)  # [B*C, S, L]
        return out.reshape(batch, channels, N_SOURCES, length).transpose(1, 2)

    def reference(self, mix: np.ndarray) -> np.ndarray:
        """scipy.signal.lfilter of each source's filter over mix [L, C]: [S, L, C] float64."""
        return np.stack([scipy.signal.lfilter(h, [1.0], mix.astype(np.float64), axis=0)
                         for h in self.taps])


class PositionModel(nn.Module):
    """T model that is NOT time-invariant: every source = input * (sample index + 1)."""

    domain = "t"

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        ramp = torch.arange(1, mix.shape[-1] + 1, dtype=mix.dtype)
        return (mix * ramp)[:, None].repeat(1, N_SOURCES, 1, 1)


class MagnitudeGainModel(nn.Module):
    """TF model: source magnitudes g_s |X|. [B, C, F, T] -> [B, S, C, F, T]."""

    domain = "tf"

    def __init__(self, gains, n_fft: int = 256, hop_length: int = 64):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("gains", torch.tensor(gains, dtype=torch.float32))

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        return mix_mag[:, None] * self.gains[None, :, None, None, None]


def noise(samples: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((samples, 2)) * 0.3).astype(np.float32)


def chunk_starts(n_samples: int, chunk: int, overlap: int) -> list[int]:
    """Where chunks start: every hop until a chunk reaches the end (derived from the spec)."""
    chunk = min(chunk, n_samples)
    hop = chunk - min(overlap, chunk // 2)
    starts = [0]
    while starts[-1] + chunk < n_samples:
        starts.append(starts[-1] + hop)
    return starts


# (chunk, overlap, length) in samples: overlaps below, at and above chunk // 2 (then clipped),
# no overlap, lengths that end mid-chunk, on a hop boundary, and one sample past it.
COMBOS = [(400, 100, 2000), (400, 100, 1300), (400, 100, 1301), (400, 0, 1999),
          (400, 200, 1777), (400, 350, 1500), (1000, 250, 999), (257, 64, 3001)]


@pytest.mark.parametrize("fade", [1, 2, 7, 64, 2205])
def test_crossfade_ramps_sum_to_one(fade):
    fade_in = crossfade_window(3 * fade, fade, fade_in=True, fade_out=False)[:fade]
    fade_out = crossfade_window(3 * fade, fade, fade_in=False, fade_out=True)[-fade:]
    np.testing.assert_allclose(fade_in + fade_out, 1.0, rtol=0, atol=1e-12)
    assert np.all(np.diff(fade_in) > 0) and np.all(fade_in > 0)  # no chunk is ever ignored


@pytest.mark.parametrize("chunk,overlap,length", COMBOS)
def test_crossfade_windows_tile_to_one(chunk, overlap, length):
    """The windows of all chunks, placed at their starts, add up to exactly 1 everywhere."""
    starts = chunk_starts(length, chunk, overlap)
    fade = min(overlap, min(chunk, length) // 2)
    total = np.zeros(length)
    for k, start in enumerate(starts):
        stop = min(start + chunk, length)
        total[start:stop] += crossfade_window(stop - start, fade, fade_in=k > 0,
                                              fade_out=k < len(starts) - 1)
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk,overlap,length", COMBOS)
def test_overlap_add_streams_in_bounded_reads(chunk, overlap, length):
    """Reads are at most one chunk and follow the chunk starts; blocks tile the signal."""
    mix = noise(length)
    reads = []

    def read(start, stop):
        reads.append((start, stop))
        return mix[start:stop]

    def infer(x):
        return np.repeat(x[None], N_SOURCES, axis=0)

    blocks = list(overlap_add(read, length, infer, chunk, overlap))
    assert [r[0] for r in reads] == chunk_starts(length, chunk, overlap)
    assert all(0 < stop - start <= chunk for start, stop in reads) and reads[-1][1] == length
    assert sum(b.shape[1] for b in blocks) == length
    np.testing.assert_allclose(np.concatenate(blocks, axis=1)[0], mix, rtol=0, atol=1e-7)


@pytest.mark.parametrize("chunk,overlap,length", COMBOS)
def test_memoryless_linear_model_is_reproduced_exactly(chunk, overlap, length):
    model = ChannelMixModel()
    mix = noise(length)
    infer = ChunkInference(model, {})
    out = np.concatenate(list(overlap_add(lambda a, b: mix[a:b], length, infer, chunk, overlap)),
                         axis=1)
    assert out.shape == (N_SOURCES, length, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, model.reference(mix), rtol=0, atol=2e-6)


@pytest.mark.parametrize("chunk_seconds,overlap", [(0.01, 0.25), (0.02, 0.5), (0.013, 0.0)])
def test_separate_array_settings_in_seconds(chunk_seconds, overlap):
    model = ChannelMixModel(seed=3)
    mix = noise(int(0.07 * SAMPLE_RATE) + 17)
    out = separate_array(model, mix, {"chunk_seconds": chunk_seconds, "overlap": overlap})
    np.testing.assert_allclose(out, model.reference(mix), rtol=0, atol=2e-6)


@pytest.mark.parametrize("chunk,overlap,length", [(400, 100, 2000), (400, 200, 1777),
                                                  (257, 64, 3001), (1000, 300, 4321)])
def test_fir_filter_matches_lfilter_outside_chunk_heads(chunk, overlap, length):
    """A causal filter of K taps is exact except in the first K - 1 samples of each later chunk,
    which lack their past; there the output is (1 - w) y + w y_k (w the fade-in weight, y_k the
    filter run on the chunk alone from zero state), as the previous chunk has the context."""
    taps = 32
    model = CausalFIRModel(taps)
    mix = noise(length, seed=2)
    out = np.concatenate(list(overlap_add(lambda a, b: mix[a:b], length, ChunkInference(model, {}),
                                          chunk, overlap)), axis=1)
    whole = model.reference(mix)
    expected = whole.copy()
    fade = min(overlap, chunk // 2)
    ramp = (np.arange(fade) + 0.5) / fade
    for start in chunk_starts(length, chunk, overlap)[1:]:
        head = slice(start, start + taps - 1)
        alone = model.reference(mix[start:start + taps - 1])
        w = ramp[: taps - 1, None]
        expected[:, head] = (1 - w) * whole[:, head] + w * alone
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)
    tail = np.ones(length, dtype=bool)
    for start in chunk_starts(length, chunk, overlap)[1:]:
        tail[start:start + taps - 1] = False
    np.testing.assert_allclose(out[:, tail], whole[:, tail], rtol=0, atol=2e-6)


def test_tf_path_with_wiener_gives_the_known_gains():
    """Magnitudes g_s|X| with one Wiener iteration: every source has the same spatial covariance,
    so the filter returns (g_s^2 / sum g^2) X; with 0 iterations g_s X. ISTFT(STFT) is exact."""
    gains = np.array([0.1, 0.2, 0.3, 0.4])
    model = MagnitudeGainModel(gains)
    mix = noise(7000, seed=4)
    for iterations, expected_gain in ((0, gains), (1, gains**2 / np.sum(gains**2))):
        cfg = {"chunk_seconds": 2000 / SAMPLE_RATE, "overlap": 0.25, "wiener_iterations": iterations}
        out = separate_array(model, mix, cfg)
        np.testing.assert_allclose(out, expected_gain[:, None, None] * mix[None], rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [1, 100, 3999])
def test_track_shorter_than_one_chunk_is_one_call(length):
    """No split: a position-dependent model sees the whole track once."""
    mix = noise(length, seed=5)
    calls = []
    infer = ChunkInference(PositionModel(), {})

    def counting(x):
        calls.append(len(x))
        return infer(x)

    out = np.concatenate(list(overlap_add(lambda a, b: mix[a:b], length, counting, 4000, 1000)),
                         axis=1)
    assert calls == [length]
    expected = mix * np.arange(1, length + 1)[:, None]
    np.testing.assert_allclose(out, np.repeat(expected[None], N_SOURCES, axis=0), rtol=1e-6)


def test_shift_trick_leaves_time_invariant_models_unchanged():
    model = CausalFIRModel(16, seed=6)
    mix = noise(3000, seed=6)
    out = ChunkInference(model, {"shifts": 3})(mix)
    np.testing.assert_allclose(out, model.reference(mix), rtol=0, atol=2e-6)


@pytest.mark.parametrize("shifts", [1, 3, 5])
def test_shift_scheme_is_the_authors(shifts):
    """danna_sep/infer.py: offsets linspace(0, 0.5 s, shifts) truncated to integers; offset o
    puts 0.5 s - o zeros in front, so the position model gives x[i] (0.5 s - o + i + 1),
    averaged over the offsets. One shift: the model sees half a second of silence first."""
    max_shift = SAMPLE_RATE // 2
    offsets = np.linspace(0, max_shift, shifts).astype(np.int64)  # 5 shifts: 0, 5512, 11025, ...
    mix = noise(2000, seed=8)
    out = ChunkInference(PositionModel(), {"shifts": shifts})(mix)
    position = np.arange(1, len(mix) + 1)[:, None] + max_shift - np.mean(offsets)
    np.testing.assert_allclose(out, np.repeat((mix * position)[None], N_SOURCES, axis=0), rtol=1e-5)


def test_tf_models_ignore_shifts_and_clamp_applies():
    model = MagnitudeGainModel([1.0, 1.0, 1.0, 1.0])
    mix = noise(3000, seed=9) * 10
    plain = ChunkInference(model, {"wiener_iterations": 0})(mix)
    shifted = ChunkInference(model, {"wiener_iterations": 0, "shifts": 2})(mix)
    np.testing.assert_array_equal(plain, shifted)
    clamped = ChunkInference(model, {"wiener_iterations": 0, "clamp": 0.99})(mix)
    np.testing.assert_array_equal(clamped, np.clip(plain, -0.99, 0.99))


def write_mixture(path, mix):
    sf.write(str(path), mix, SAMPLE_RATE, subtype="FLOAT")  # float: read back bit-exact


def test_separate_file_matches_separate_array_and_renames_at_the_end(tmp_path):
    mix = noise(9000, seed=10)
    write_mixture(tmp_path / "mixture.wav", mix)
    out_dir = tmp_path / "out"
    cfg = {"chunk_seconds": 2000 / SAMPLE_RATE, "overlap": 0.3}
    model = ChannelMixModel(seed=11)
    seen_during_run = []

    class Watching(ChannelMixModel):
        def forward(self, x):
            seen_during_run.append([s for s in SOURCES if (out_dir / f"{s}.wav").exists()])
            return super().forward(x)

    watching = Watching(seed=11)
    paths = separate_file(watching, tmp_path / "mixture.wav", out_dir, cfg)
    assert [p.name for p in paths] == [f"{s}.wav" for s in SOURCES]
    assert len(seen_during_run) > 1 and all(names == [] for names in seen_during_run)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in paths)  # no temps
    expected = separate_array(model, mix, cfg)
    for i, path in enumerate(paths):
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        assert sr == SAMPLE_RATE
        np.testing.assert_array_equal(audio, expected[i])


def test_separate_file_failure_leaves_previous_outputs(tmp_path):
    mix = noise(9000, seed=12)
    write_mixture(tmp_path / "mixture.wav", mix)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "drums.wav").write_bytes(b"previous result")

    class FailsLater(ChannelMixModel):
        calls = 0

        def forward(self, x):
            FailsLater.calls += 1
            if FailsLater.calls == 3:
                raise RuntimeError("out of memory")
            return super().forward(x)

    with pytest.raises(RuntimeError, match="out of memory"):
        separate_file(FailsLater(), tmp_path / "mixture.wav", out_dir,
                      {"chunk_seconds": 2000 / SAMPLE_RATE, "overlap": 0.25})
    assert sorted(p.name for p in out_dir.iterdir()) == ["drums.wav"]
    assert (out_dir / "drums.wav").read_bytes() == b"previous result"


# -- edge cases (issue 10 item 11) ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_xumx():
    from dannasep.models import TINY_KWARGS, build_model

    torch.manual_seed(0)
    return build_model("xumx", **TINY_KWARGS["xumx"]).eval()  # n_fft 1024: needs > 512 samples


@pytest.mark.parametrize("chunk,overlap,length", [
    (2000, 0.0, 6005),   # overlap 0: a last chunk of 5 samples
    (2000, 0.0, 4001),   # ... of 1 sample
    (300, 0.25, 1000),   # chunks shorter than n_fft / 2 + 1 everywhere
    (2000, 0.25, 100),   # a track shorter than that
])
def test_chunks_shorter_than_half_a_frame_are_zero_padded(tiny_xumx, chunk, overlap, length):
    """torch.stft's reflect padding needs more than n_fft / 2 samples: such a chunk used to crash
    X-UMX. Now it is separated with zeros appended up to n_fft / 2 + 1 and cut back, which is
    what the Separator gives on the zero-padded chunk."""
    from dannasep.separation.separator import Separator

    mix = noise(length, seed=13)
    cfg = {"chunk_seconds": chunk / SAMPLE_RATE, "overlap": overlap}
    out = separate_array(tiny_xumx, mix, cfg)
    assert out.shape == (N_SOURCES, length, 2) and np.isfinite(out).all()
    starts = chunk_starts(length, chunk, int(chunk * overlap))
    last = mix[starts[-1]:]
    if len(last) <= tiny_xumx.n_fft // 2 and (overlap == 0 or len(starts) == 1):  # not cross-faded
        padded = np.zeros((tiny_xumx.n_fft // 2 + 1, 2), np.float32)
        padded[:len(last)] = last
        with torch.no_grad():
            expected = Separator(tiny_xumx)(torch.from_numpy(padded.T.copy())[None])[0]
        np.testing.assert_allclose(out[:, starts[-1]:], expected[..., :len(last)].permute(0, 2, 1).numpy(),
                                   rtol=0, atol=1e-6)
