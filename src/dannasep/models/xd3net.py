"""X-D3Net: four D3Nets (one per source) bridged by averaging, trained with the X-scheme's
multi-domain and combination losses (Sawata et al., "The Whole Is Greater than the Sum of Its
Parts", IEEE/ACM TASLP 2023, section IV-B; loss `multidomain`, see dannasep.losses).

Each source's D3Net is Sony's music-source-separation D3Net (sony/ai-research-code,
d3net/music-source-separation/model.py, with its per-source configs/<source>.yaml, which are
`SONY_D3NET` here): magnitude input scaled per bin, band-wise MD3Nets on the low and high bands
(split per source), a full-band MD3Net on the first `max_bin` bins, the band outputs matched to
one width (BN + 1x1 conv) and concatenated over frequency, concatenated with the full-band output
over channels, a final dilated dense block, a BN + sigmoid-gated 1x1 conv output, a per-bin
affine, ReLU; the bins above `max_bin` are the mixture's. The output is the source magnitude
itself (not a mask). Parameter counts equal those of Sony's code run on its configs
(tests/test_models_xd3net.py).

Details the paper leaves open, chosen here:
* Bridge position: the paper adds the bridge "at the end of band-wise D3 blocks" (its Fig. 7).
  Here the concatenated band outputs ([B, 16, max_bin, T], the same shape for the four Sony
  configs) are averaged over the four sources before each source joins its own full-band output;
  the full-band outputs are not averaged, since their widths differ between sources (8 for bass,
  11 for the others).
* `in_offset`/`in_scale` start at 0 / 1; Sony initialises them to the training set's per-bin
  mean and std of the mono magnitude (this trainer has no statistics pass; both are learnt).
* Frame counts that are not a multiple of 2^levels (16 for the paper's full band) are zero-padded
  at the end and the output trimmed back; Sony's model sees 256- or 352-frame patches only.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import SOURCES
from .xd3net_blocks import MD3Net, DilatedDenseBlock

# Sony's configs/<source>.yaml. Keys: band_split = band_split_idxs, band_init = num_init_features,
# band_layers = num_layer_blocks, band_growths = dens_k, band_blocks = b_n_blocks, band_comp =
# comp_rates, full_* = f_*, final_layers = ttl_num_layer_block, final_growth = ttl_dens_k.
_FULL_COMMON = dict(full_init=32, full_blocks=[2] * 9, full_comp=[1.0] * 10, final_layers=3,
                    final_growth=12)
_BAND_COMMON = dict(band_init=[32, 8], band_blocks=[[2] * 7, [1] * 5],
                    band_comp=[[1.0] * 6, [1.0] * 6])
SONY_D3NET = {
    "drums": dict(band_split=[128], band_layers=[[5, 5, 5, 4, 4, 4, 4], [1] * 5],
                  band_growths=[[16, 18, 20, 22, 20, 18, 16], [2] * 5],
                  full_layers=[4, 5, 6, 7, 8, 6, 6, 4, 4],
                  full_growths=[13, 14, 15, 16, 16, 16, 14, 12, 11],
                  **_BAND_COMMON, **_FULL_COMMON),
    "bass": dict(band_split=[192], band_layers=[[5, 5, 5, 5, 4, 4, 4], [1] * 7],
                 band_growths=[[16, 18, 18, 20, 18, 16, 16], [2] * 7],
                 full_layers=[4, 5, 6, 7, 8, 6, 6, 4, 4],
                 full_growths=[10, 10, 12, 14, 16, 14, 12, 8, 8],
                 **{**_BAND_COMMON, "band_blocks": [[2] * 7, [1] * 7]}, **_FULL_COMMON),
    "other": dict(band_split=[256], band_layers=[[5, 5, 5, 5, 4, 4, 4], [1] * 5],
                  band_growths=[[16, 18, 20, 22, 20, 18, 16], [2] * 5],
                  full_layers=[4, 5, 6, 7, 8, 6, 5, 4, 4],
                  full_growths=[13, 14, 15, 16, 17, 16, 14, 12, 11],
                  **_BAND_COMMON, **_FULL_COMMON),
}
SONY_D3NET["vocals"] = copy.deepcopy(SONY_D3NET["other"])  # identical in Sony's configs


class D3Net(nn.Module):
    """One source's D3Net, split at the bridge: `features` then `head`.

    Shapes: features: mix_mag [B, C, bins, T] -> (bands [B, K, max_bin, T], full [B, k, max_bin,
    T]); head: (bands, full, mix_mag) -> magnitude [B, C, bins, T]. T must be a multiple of
    2^`levels`.
    """

    def __init__(self, n_bins: int, max_bin: int, nb_channels: int, band_split, band_init,
                 band_layers, band_growths, band_blocks, band_comp, full_init, full_layers,
                 full_growths, full_blocks, full_comp, final_layers, final_growth):
        super().__init__()
        self.max_bin = max_bin
        self.edges = [0, *band_split, max_bin]
        self.in_offset = nn.Parameter(torch.zeros(n_bins))
        self.in_scale = nn.Parameter(torch.ones(n_bins))
        self.decode_scale = nn.Parameter(torch.ones(max_bin))
        self.decode_bias = nn.Parameter(torch.ones(max_bin))
        n_bands = len(self.edges) - 1
        lists = (band_init, band_layers, band_growths, band_blocks, band_comp)
        if any(len(v) != n_bands for v in lists):
            raise ValueError(f"band_split {band_split} makes {n_bands} bands: give one band_init, "
                             f"band_layers, band_growths, band_blocks and band_comp entry each")
        self.band_width = max(g[-1] for g in band_growths)
        self.band_inits, self.bands, self.band_match = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for init, layers, growths, blocks, comp in zip(*lists):
            self.band_inits.append(nn.Conv2d(nb_channels, init, 3, padding=1))
            self.bands.append(MD3Net(init, growths, layers, blocks, comp))
            self.band_match.append(
                nn.Sequential(nn.BatchNorm2d(growths[-1]), nn.Conv2d(growths[-1], self.band_width, 1))
                if growths[-1] < self.band_width else nn.Identity())
        self.full_init = nn.Conv2d(nb_channels, full_init, 3, padding=1)
        self.full = MD3Net(full_init, full_growths, full_layers, full_blocks, full_comp)
        self.final = DilatedDenseBlock(self.band_width + full_growths[-1], final_growth, final_layers)
        self.gate_norm = nn.BatchNorm2d(final_growth)
        self.gate = nn.Conv2d(final_growth, nb_channels, 1)
        self.filt = nn.Conv2d(final_growth, nb_channels, 1)
        self.levels = max(m.levels for m in [*self.bands, self.full])
        for (lo, hi), band in zip(zip(self.edges, self.edges[1:]), [*self.bands]):
            if (hi - lo) % 2 ** band.levels:
                raise ValueError(f"band {lo}:{hi} has {hi - lo} bins, not a multiple of "
                                 f"2^{band.levels} for its {band.levels} pooling levels")
        if max_bin % 2 ** self.full.levels:
            raise ValueError(f"max_bin {max_bin} is not a multiple of 2^{self.full.levels}")

    def features(self, mix_mag: torch.Tensor):
        x = (mix_mag - self.in_offset[:, None]) / self.in_scale[:, None]
        bands = []
        for (lo, hi), init, band, match in zip(zip(self.edges, self.edges[1:]), self.band_inits,
                                               self.bands, self.band_match):
            bands.append(match(band(init(x[:, :, lo:hi]))))
        full = self.full(self.full_init(x[:, :, :self.max_bin]))
        return torch.cat(bands, 2), full

    def head(self, bands: torch.Tensor, full: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
        y = self.gate_norm(self.final(torch.cat([bands, full], 1)))
        y = torch.sigmoid(self.gate(y)) * self.filt(y)
        y = torch.relu(y * self.decode_scale[:, None] + self.decode_bias[:, None])
        return torch.cat([y, mix_mag[:, :, self.max_bin:]], 2)


class XD3Net(nn.Module):
    """X-D3Net on magnitude spectrograms: [B, C, n_fft/2 + 1, T] -> [B, 4, C, n_fft/2 + 1, T].

    `nets` maps each source to its D3Net settings (default: Sony's per-source configs, the
    paper's); `bridge=False` gives four independent D3Nets (the paper's C1 / original D3Net).
    """

    domain = "tf"

    def __init__(self, n_fft: int = 4096, hop_length: int = 1024, max_bin: int = 1600,
                 nb_channels: int = 2, bridge: bool = True, nets: dict | None = None):
        super().__init__()
        nets = copy.deepcopy(SONY_D3NET if nets is None else nets)
        if sorted(nets) != sorted(SOURCES):
            raise ValueError(f"nets must have one entry per source {list(SOURCES)}, got {sorted(nets)}")
        self.kwargs = dict(n_fft=n_fft, hop_length=hop_length, max_bin=max_bin,
                           nb_channels=nb_channels, bridge=bridge, nets=nets)
        self.sources = SOURCES
        self.n_fft, self.hop_length = n_fft, hop_length
        self.nb_bins, self.max_bin, self.nb_channels = n_fft // 2 + 1, max_bin, nb_channels
        self.bridge = bridge
        if not 0 < max_bin <= self.nb_bins:
            raise ValueError(f"max_bin must be in 1..{self.nb_bins}, got {max_bin}")
        self.nets = nn.ModuleDict({src: D3Net(self.nb_bins, max_bin, nb_channels, **nets[src])
                                   for src in SOURCES})
        widths = {net.band_width for net in self.nets.values()}
        if bridge and len(widths) > 1:
            raise ValueError(f"bridge: the sources' band outputs must have one width to be "
                             f"averaged, got {sorted(widths)} (last band_growths entries)")
        self.levels = max(net.levels for net in self.nets.values())

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        """mix_mag [batch, channels, bins, frames] -> source magnitudes [batch, 4, channels, bins, frames]."""
        batch, channels, bins, frames = mix_mag.shape
        if bins != self.nb_bins or channels != self.nb_channels:
            raise ValueError(f"XD3Net expects [batch, {self.nb_channels}, {self.nb_bins}, frames], "
                             f"got {list(mix_mag.shape)}")
        x = F.pad(mix_mag, (0, -frames % 2 ** self.levels))
        features = [self.nets[src].features(x) for src in self.sources]
        if self.bridge:
            bridged = torch.stack([bands for bands, _ in features]).mean(0)
            features = [(bridged, full) for _, full in features]
        out = [self.nets[src].head(bands, full, x) for src, (bands, full) in zip(self.sources, features)]
        return torch.stack(out, 1)[..., :frames]
