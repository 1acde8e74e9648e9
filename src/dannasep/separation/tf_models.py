"""Whole-track source magnitudes of a TF model, frame block by frame block, at bounded memory.

As the authors ran them (danna_sep/infer.py `tf_sep`):

* X-UMX on the whole track. Its BiLSTMs see the whole sequence, so the frame-wise parts
  (encoder and bridge, decoder) run block by block and each BiLSTM runs over the whole sequence
  through `stream_lstm` (exact, state handed from block to block), with the bridge and LSTM
  sequences kept on disk in between (4 KiB a frame at paper size);
* the U-Net on pieces of 2,584 frames (`batching=True` there), each piece on its own;
* any other TF model (a released runner, say) in pieces of its `paper_piece_frames` attribute,
  or on the whole track at once when it has none.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..models.unet import UNet
from ..models.xumx import XUMX
from .frame_store import FrameStore
from .recurrent import stream_lstm
from .signal import Signal
from .spectrogram import n_frames, stft_frames

UNET_PIECE_FRAMES = 2584  # danna_sep/infer.py: `frames = 2584` when batching the U-Net


def filter_device(device: torch.device | str) -> torch.device:
    """Where the STFT and the complex128 Wiener filter run: the model's device, except Apple's
    MPS, which has no float64 (the model runs there, the filter on the CPU)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def piece_frames(model: nn.Module, total_frames: int) -> int:
    """Frames the model sees at once in paper mode (X-UMX: see `whole_track_magnitudes`)."""
    piece = getattr(model, "paper_piece_frames", None)
    if piece is None and isinstance(model, UNet):
        piece = UNET_PIECE_FRAMES
    return int(piece) if piece else max(total_frames, 1)


@torch.no_grad()
def whole_track_magnitudes(model: nn.Module, signal: Signal, block_frames: int, scratch,
                           device: torch.device | str = "cpu"
                           ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (t0, mix [C, F, n] complex64, magnitudes [S, C, F, n]) for consecutive frame
    blocks covering the signal's whole STFT, as the model gives them on the whole track."""
    total = n_frames(signal.length, model.hop_length)
    if isinstance(model, XUMX):
        yield from _xumx(model, signal, total, block_frames, scratch, device)
        return
    piece, work = piece_frames(model, total), filter_device(device)
    for t0 in range(0, total, piece):
        mix = stft_frames(signal, model.n_fft, model.hop_length, t0, min(t0 + piece, total), work)
        yield t0, mix, model(mix.abs().unsqueeze(0).to(device))[0].to(work)


def _xumx(model: XUMX, signal: Signal, total: int, block: int, scratch, device):
    work = filter_device(device)

    def mix_block(t0):
        return stft_frames(signal, model.n_fft, model.hop_length, t0, min(t0 + block, total), work)

    starts = range(0, total, block)
    with FrameStore(scratch, total, (1, model.hidden_size)) as bridge:
        for t0 in starts:
            bridge.write(t0, model.encode(mix_block(t0).abs().unsqueeze(0).to(device)).cpu().numpy())
        lstm_sum = None
        for src in model.sources:
            out = stream_lstm(model.lstms[src], bridge, block, scratch)
            if lstm_sum is None:
                lstm_sum = out
                continue
            for t0 in starts:
                t1 = min(t0 + block, total)
                lstm_sum.write(t0, lstm_sum.read(t0, t1) + out.read(t0, t1))
            out.close()
        with lstm_sum:
            for t0 in starts:
                t1 = min(t0 + block, total)
                mix = mix_block(t0)
                lstm_mean = torch.from_numpy(lstm_sum.read(t0, t1) / np.float32(len(model.sources)))
                masks = model.decode(torch.from_numpy(bridge.read(t0, t1)).to(device),
                                     lstm_mean.to(device))
                yield t0, mix, masks[0].to(work) * mix.abs().unsqueeze(0)
