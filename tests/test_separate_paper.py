"""Paper mode (dannasep.separation, `separate.mode: paper`) against whole-track in-memory inference.

The references are the authors' inference written out from danna_sep/infer.py and cli.py
(yoyololicon/danna-sep 1.0.2, read with the fetch tool), in memory on the whole track: 1024 zeros
appended; TF models: STFT, model on the whole track (the U-Net in pieces of `piece` frames),
`norbert.wiener(V, X.astype(complex128), niter)`, ISTFT; Demucs: `demucs_sep` with
`torch.linspace(0, 0.5 s, shifts)` offsets, then clamp +-0.99. The Wiener filter there is
norbert's own, not dannasep.dsp. Tracks span several blocks, so every streamed pass is
exercised; "equal" means 1e-5 relative to the reference's peak (issue 8), float32 rounding
apart.
"""

from __future__ import annotations

import copy

import norbert
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dannasep import dsp
from dannasep.constants import SAMPLE_RATE
from dannasep.models import TINY_KWARGS, build_model
from dannasep.separation.frame_store import FrameStore
from dannasep.separation.modes import separate_signal
from dannasep.separation.recurrent import stream_lstm
from dannasep.separation.signal import Signal
from dannasep.separation.spectrogram import istft_samples, n_frames, stft_frames

RTOL = 1e-5


def authors_tf(model, audio: np.ndarray, niter: int, piece: int | None = None) -> np.ndarray:
    """danna_sep `entry` + `tf_sep` on audio [L, 2] -> [sources, L, 2] (float32)."""
    y = torch.from_numpy(np.ascontiguousarray(audio.T))
    length = y.shape[1]
    y = F.pad(y, [0, 1024])
    X = dsp.stft(y, model.n_fft, model.hop_length)  # torch.stft, Hann, centred, reflect (theirs)
    with torch.no_grad():
        mag = X.abs()
        chunks = mag.split(piece, dim=-1) if piece else [mag]
        V = torch.cat([model(c.unsqueeze(0))[0] for c in chunks], -1)
    V = np.transpose(V.numpy(), (3, 2, 1, 0))
    Y = norbert.wiener(V, np.transpose(X.numpy(), (2, 1, 0)).astype(np.complex128), niter,
                       use_softmask=False)
    Y = torch.from_numpy(Y).permute(3, 2, 1, 0)
    est = dsp.istft(Y, model.n_fft, model.hop_length, y.shape[1])
    return est[..., :length].float().permute(0, 2, 1).numpy()


def authors_demucs(model, audio: np.ndarray, shifts: int) -> np.ndarray:
    """danna_sep `entry` + `demucs_sep` on audio [L, 2] -> [sources, L, 2] (float32)."""
    y = torch.from_numpy(np.ascontiguousarray(audio.T))
    length = y.shape[1]
    y = F.pad(y, [0, 1024])
    max_shift = int(SAMPLE_RATE * 0.5)
    valid, padded_length = y.shape[1], y.shape[1] + max_shift
    padded = F.pad(y, [max_shift] * 2)
    out = torch.zeros_like(y).repeat(4, 1, 1)
    with torch.no_grad():
        for shift in torch.linspace(0, max_shift, steps=shifts, dtype=torch.long).tolist():
            shifted = model(padded[:, shift:shift + padded_length].unsqueeze(0))[0]
            start = max_shift - shift
            n = min(valid, shifted.shape[-1] - start)
            out[..., :n] += shifted[..., start:start + n]
    out /= shifts
    return out.clamp(-0.99, 0.99)[..., :length].permute(0, 2, 1).numpy()


def music_like(samples: int, seed: int, scale: float = 0.4) -> np.ndarray:
    """Stereo noise with a slowly varying level and a DC offset (Demucs standardises by both)."""
    rng = np.random.default_rng(seed)
    level = 1 + 0.8 * np.sin(np.linspace(0, 7, samples))[:, None]
    return (rng.standard_normal((samples, 2)) * scale * level + 0.02).astype(np.float32)


def paper(model, audio, tmp_path, **settings) -> np.ndarray:
    cfg = {"mode": "paper", **settings}
    blocks = list(separate_signal(model, Signal.from_array(audio), cfg, tmp_path))
    return np.concatenate(blocks, axis=1)


def assert_close(out, ref):
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= RTOL * np.abs(ref).max()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return {name: build_model(arch, **TINY_KWARGS[name]).eval()
            for name, arch in [("xumx", "xumx"), ("unet", "unet"), ("demucs", "demucs"),
                               ("demucs_baseline", "demucs")]}


@pytest.mark.parametrize("niter", [1, 2, 0])
def test_xumx_paper_mode_equals_whole_track(tiny, tmp_path, niter):
    """X-UMX's BiLSTM over the whole track; 30000 samples in 0.1 s blocks = 7 blocks."""
    audio = music_like(30000, seed=1)
    out = paper(tiny["xumx"], audio, tmp_path, chunk_seconds=0.1, wiener_iterations=niter)
    assert_close(out, authors_tf(tiny["xumx"], audio, niter))


def test_unet_paper_mode_equals_whole_track_in_pieces(tiny, tmp_path):
    """The U-Net's masks in pieces (2,584 frames as the authors'; 40 here so that a short track
    has several), one Wiener iteration over the whole track."""
    model = build_model("unet", **TINY_KWARGS["unet"]).eval()
    model.load_state_dict(tiny["unet"].state_dict())
    model.paper_piece_frames = 40
    audio = music_like(30000, seed=2)
    out = paper(model, audio, tmp_path, chunk_seconds=0.1)
    assert_close(out, authors_tf(model, audio, 1, piece=40))


def test_unet_pieces_default_to_the_authors_2584_frames(tiny, tmp_path):
    from dannasep.separation.tf_models import piece_frames

    assert piece_frames(tiny["unet"], 10**6) == 2584
    assert piece_frames(tiny["xumx"], 123) == 123  # other models: the whole track


@pytest.mark.parametrize("shifts", [1, 2])
def test_demucs_paper_mode_equals_the_authors_shift_scheme(tiny, tmp_path, shifts):
    """Four decoders, standardised input, x2 resampling, BiLSTM; 0.2 s blocks over 0.68 s plus
    the 0.5 s lead-in and 1024-sample tail."""
    model = copy.deepcopy(tiny["demucs"])
    with torch.no_grad():
        model.decoder[-1].up.bias.add_(5.0)  # loud enough for the clamp to act somewhere
    audio = music_like(30000, seed=3, scale=1.0)
    out = paper(model, audio, tmp_path, chunk_seconds=0.2, shifts=shifts, clamp=0.99)
    ref = authors_demucs(model, audio, shifts)
    assert (np.abs(ref) >= 0.99).any()
    assert_close(out, ref)


@pytest.mark.parametrize("kwargs", [
    TINY_KWARGS["demucs_baseline"],  # v2: valid convs, centre trims
    dict(TINY_KWARGS["demucs"], resample=False),
    dict(TINY_KWARGS["demucs_baseline"], normalize=True, lstm_layers=2),
    dict(TINY_KWARGS["demucs_baseline"], lstm_layers=0),
    dict(channels=4, depth=6, lstm_layers=2, normalize=True, decoders="per_source"),  # paper depth
])
@pytest.mark.parametrize("length", [1, 700, 20011])
def test_windowed_demucs_equals_its_whole_track_forward(kwargs, length, tmp_path):
    from dannasep.separation.demucs_stream import DemucsStream

    torch.manual_seed(1)
    model = build_model("demucs", **kwargs).eval()
    audio = music_like(length, seed=length)
    with torch.no_grad():
        ref = model(torch.from_numpy(np.ascontiguousarray(audio.T)).unsqueeze(0))[0]
    stream = DemucsStream(model, block=4000, scratch=tmp_path)
    out = np.concatenate(list(stream.blocks(Signal.from_array(audio))), axis=1)
    assert_close(out, ref.permute(0, 2, 1).numpy())


def test_paper_mode_handles_tracks_shorter_than_a_frame(tiny, tmp_path):
    """A 100-sample track (less than n_fft / 2; the authors' 1024-sample tail makes it enough)."""
    audio = music_like(100, seed=4)
    assert_close(paper(tiny["xumx"], audio, tmp_path), authors_tf(tiny["xumx"], audio, 1))
    assert_close(paper(tiny["demucs"], audio, tmp_path, shifts=1, clamp=0.99),
                 authors_demucs(tiny["demucs"], audio, 1))


def test_paper_mode_differs_from_chunked_but_not_by_much(tiny, tmp_path):
    """Sanity: the two modes are different computations of the same separation."""
    audio = music_like(30000, seed=5)
    whole = paper(tiny["xumx"], audio, tmp_path, chunk_seconds=0.1)
    chunked = np.concatenate(list(separate_signal(
        tiny["xumx"], Signal.from_array(audio), {"chunk_seconds": 0.1, "overlap": 0.25}, tmp_path)), axis=1)
    difference = np.abs(whole - chunked).max() / np.abs(whole).max()
    assert 1e-4 < difference < 1


# -- the streamed pieces on their own -------------------------------------------------------

@pytest.mark.parametrize("length,n_fft,hop", [(10000, 1024, 256), (600, 1024, 256), (4097, 4096, 1024)])
def test_frame_ranges_of_stft_and_istft_equal_the_whole(length, n_fft, hop):
    audio = music_like(length, seed=6)
    signal = Signal.from_array(audio)
    whole = dsp.stft(torch.from_numpy(np.ascontiguousarray(audio.T)), n_fft, hop)
    total = n_frames(length, hop)
    assert whole.shape[-1] == total
    for t0, t1 in [(0, total), (0, 2), (total - 2, total), (1, 2)]:
        torch.testing.assert_close(stft_frames(signal, n_fft, hop, t0, t1), whole[..., t0:t1],
                                   rtol=0, atol=1e-5)
    spec = whole.to(torch.complex128)
    inverse = dsp.istft(spec, n_fft, hop, length)
    for a, b in [(0, length), (0, 7), (length - 300, length), (length // 3, length // 2)]:
        torch.testing.assert_close(istft_samples(lambda f0, f1: spec[..., f0:f1], n_fft, hop, total, a, b),
                                   inverse[..., a:b], rtol=0, atol=1e-12)


@pytest.mark.parametrize("layers,bidirectional", [(1, True), (3, True), (2, False)])
def test_streamed_lstm_equals_nn_lstm(layers, bidirectional, tmp_path):
    torch.manual_seed(2)
    lstm = nn.LSTM(12, 8, num_layers=layers, bidirectional=bidirectional).eval()
    x = torch.randn(53, 1, 12)
    with torch.no_grad():
        ref = lstm(x)[0]
    with FrameStore(tmp_path, 53, (1, 12)) as source:
        source.write(0, x.numpy())
        for block in (1, 10, 100):
            with stream_lstm(lstm, source, block, tmp_path) as out:
                torch.testing.assert_close(torch.from_numpy(out.read(0, 53)), ref, rtol=0, atol=1e-6)


def test_frame_store_keeps_no_file_behind(tmp_path):
    with FrameStore(tmp_path, 10, (2, 3)) as store:
        store.write(4, np.arange(12, dtype=np.float32).reshape(2, 2, 3))
        assert list(tmp_path.iterdir()) == []  # unlinked at once: a killed run leaves nothing
        np.testing.assert_array_equal(store.read(4, 6).ravel(), np.arange(12))
        np.testing.assert_array_equal(store.read(0, 4), 0)


@pytest.mark.parametrize("mode", ["paper", "chunked"])
def test_standardize_is_demucs_v2s_whole_track_standardisation(mode, tmp_path):
    """demucs v2's separate.py: ref = mono mixture; (wav - ref.mean()) / ref.std() through the
    model, then * ref.std() + ref.mean(); for a model trained on standardised tracks."""
    torch.manual_seed(2)
    model = build_model("demucs", **TINY_KWARGS["demucs_baseline"]).eval()
    audio = music_like(20000, seed=7, scale=0.3) + 0.05
    mono = audio.astype(np.float64).mean(1)
    mean, std = mono.mean(), mono.std(ddof=1)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(((audio - mean) / std).T)).float().unsqueeze(0)
        ref = (model(x)[0] * std + mean).permute(0, 2, 1).numpy()
    settings = {"mode": mode, "standardize": True, "shifts": 0,
                "chunk_seconds": 0.5 if mode == "paper" else 1.0, "overlap": 0.25}
    if mode == "paper":  # the authors' 1024-sample tail sits outside the standardised track
        out = np.concatenate(list(separate_signal(model, Signal.from_array(audio), settings, tmp_path)), axis=1)
        with torch.no_grad():
            tail = np.concatenate([(audio - mean) / std, np.zeros((1024, 2))]).astype(np.float32)
            ref = (model(torch.from_numpy(np.ascontiguousarray(tail.T)).unsqueeze(0))[0] * std + mean)
            ref = ref.permute(0, 2, 1).numpy()[:, :len(audio)]
        assert_close(out, ref)
    else:  # one chunk covers the track: the whole-track statistics, as v2
        out = np.concatenate(list(separate_signal(model, Signal.from_array(audio), settings, tmp_path)), axis=1)
        assert_close(out, ref)
