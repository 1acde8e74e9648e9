"""CrossNet-Open-Unmix (X-UMX): four Open-Unmix branches bridged by averaging.

Layout follows asteroid's `XUMX` (one encoder, BiLSTM and decoder per source) so that the official
MUSDB18-HQ weights map onto it key by key (see `xumx_import.py`); the forward pass is the same as
asteroid's `forward_masker` and the Danna-Sep authors' `X_UMX` (which packs the same weights into
grouped convolutions).
"""

from __future__ import annotations

import torch
from torch import nn

from ..constants import SOURCES


class XUMX(nn.Module):
    """X-UMX mask estimator on magnitude spectrograms.

    Per source: input (mix + input_mean) * input_scale on the first `max_bin` bins -> Linear ->
    BatchNorm -> tanh; the four results are averaged (first bridge) and fed to every source's
    BiLSTM; [bridge, mean of the four LSTM outputs] (second bridge) -> Linear -> BatchNorm -> ReLU
    -> Linear -> BatchNorm over all n_fft // 2 + 1 bins -> * output_scale + output_mean -> ReLU
    mask.
    """

    domain = "tf"

    def __init__(self, n_fft: int = 4096, hop_length: int = 1024, max_bin: int | None = 1487,
                 hidden_size: int = 512, nb_layers: int = 3, nb_channels: int = 2,
                 lstm_dropout: float = 0.4, bidirectional: bool = True):
        super().__init__()
        self.kwargs = dict(n_fft=n_fft, hop_length=hop_length, max_bin=max_bin,
                           hidden_size=hidden_size, nb_layers=nb_layers, nb_channels=nb_channels,
                           lstm_dropout=lstm_dropout, bidirectional=bidirectional)
        self.sources = SOURCES
        self.n_fft, self.hop_length = n_fft, hop_length
        self.nb_bins = n_fft // 2 + 1
        self.max_bin = int(max_bin) if max_bin else self.nb_bins
        if not 0 < self.max_bin <= self.nb_bins:
            raise ValueError(f"max_bin must be in 1..{self.nb_bins}, got {max_bin}")
        self.hidden_size, self.nb_channels = hidden_size, nb_channels
        n_src = len(SOURCES)

        # asteroid initialises input_mean to -mean and input_scale to 1/std of the training
        # mixtures (or 0 / 1), and both output parameters to 1.
        self.input_mean = nn.Parameter(torch.zeros(n_src, self.max_bin))
        self.input_scale = nn.Parameter(torch.ones(n_src, self.max_bin))
        self.output_mean = nn.Parameter(torch.ones(n_src, self.nb_bins))
        self.output_scale = nn.Parameter(torch.ones(n_src, self.nb_bins))

        lstm_hidden = hidden_size // 2 if bidirectional else hidden_size
        self.encoders = nn.ModuleDict({
            src: nn.Sequential(nn.Linear(self.max_bin * nb_channels, hidden_size, bias=False),
                               nn.BatchNorm1d(hidden_size))
            for src in SOURCES})
        self.lstms = nn.ModuleDict({
            src: nn.LSTM(input_size=hidden_size, hidden_size=lstm_hidden, num_layers=nb_layers,
                         bidirectional=bidirectional, dropout=lstm_dropout if nb_layers > 1 else 0.0)
            for src in SOURCES})
        # Index 2 is the (parameter-free) ReLU: asteroid's keys are dec.{0,1,3,4}.
        self.decoders = nn.ModuleDict({
            src: nn.Sequential(nn.Linear(2 * hidden_size, hidden_size, bias=False),
                               nn.BatchNorm1d(hidden_size),
                               nn.ReLU(),
                               nn.Linear(hidden_size, self.nb_bins * nb_channels, bias=False),
                               nn.BatchNorm1d(self.nb_bins * nb_channels))
            for src in SOURCES})

    def masks(self, mix_mag: torch.Tensor) -> torch.Tensor:
        """mix_mag [batch, channels, bins, frames] -> ReLU masks [batch, sources, channels, bins, frames]."""
        bridge = self.encode(mix_mag)
        lstm_mean = torch.stack([self.lstms[src](bridge)[0] for src in self.sources]).mean(0)
        return self.decode(bridge, lstm_mean)

    # The frame-wise parts on their own, so that a long track can run them block by block and
    # only the BiLSTMs over the whole sequence (dannasep.separation.tf_models).
    def encode(self, mix_mag: torch.Tensor) -> torch.Tensor:
        """mix_mag [batch, channels, bins, frames] -> first bridge [frames, batch, hidden] (frame-wise)."""
        batch, channels, bins, frames = mix_mag.shape
        if bins != self.nb_bins or channels != self.nb_channels:
            raise ValueError(f"XUMX expects [batch, {self.nb_channels}, {self.nb_bins}, frames], "
                             f"got {list(mix_mag.shape)}")
        # [frames, batch, channels, max_bin]: the frame-major layout of asteroid's LSTMs.
        x = mix_mag[:, :, :self.max_bin].permute(3, 0, 1, 2)
        encoded = []
        for i, src in enumerate(self.sources):
            h = (x + self.input_mean[i]) * self.input_scale[i]
            h = self.encoders[src](h.reshape(frames * batch, channels * self.max_bin))
            encoded.append(torch.tanh(h).reshape(frames, batch, self.hidden_size))
        return torch.stack(encoded).mean(0)

    def decode(self, bridge: torch.Tensor, lstm_mean: torch.Tensor) -> torch.Tensor:
        """bridge, mean of the four LSTM outputs [frames, batch, hidden] -> masks
        [batch, sources, channels, bins, frames] (frame-wise)."""
        frames, batch = bridge.shape[:2]
        # mean_i cat[enc_i, lstm_i] == cat[mean_i enc_i, mean_i lstm_i]
        joint = torch.cat([bridge, lstm_mean], -1).reshape(frames * batch, 2 * self.hidden_size)
        masks = []
        for i, src in enumerate(self.sources):
            m = self.decoders[src](joint).reshape(frames, batch, self.nb_channels, self.nb_bins)
            masks.append(torch.relu(m * self.output_scale[i] + self.output_mean[i]))
        # [sources, frames, batch, channels, bins] -> [batch, sources, channels, bins, frames]
        return torch.stack(masks).permute(2, 0, 3, 4, 1)

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        """mix_mag [batch, channels, bins, frames] -> source magnitudes [batch, 4, channels, bins, frames]."""
        return self.masks(mix_mag) * mix_mag.unsqueeze(1)
