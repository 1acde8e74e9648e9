"""Model registry: a checkpoint stores a name from `MODELS` and the constructor kwargs.

Every model has `domain` ("tf": magnitude spectrogram in, source magnitudes out; "t": waveform in,
waveforms out), `sources` (always drums, bass, other, vocals) and `kwargs` (all its constructor
arguments, defaults filled in, so `build_model(name, **model.kwargs)` rebuilds it). TF models also
have `n_fft` and `hop_length` for the shared STFT (Hann window, center=True).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from ..constants import SOURCES
from ..errors import ConfigError

# name -> "module:Class". Classes are imported when first asked for, so a step imports (and,
# for DVC and Snakemake, depends on: dannasep.provenance.code_deps) only the models it builds.
_REGISTRY = {"xumx": "xumx:XUMX", "unet": "unet:UNet", "demucs": "demucs:Demucs", "tfc_tdf": "tfc_tdf:TFCTDF",
             "hdemucs": "hdemucs:HDemucs", "xd3net": "xd3net:XD3Net"}
# KUIELab's per-source STFT sizes (their MDX configs); kept here so the registry needs no torch
KUIELAB_N_FFT = {"drums": 4096, "bass": 16384, "other": 8192, "vocals": 6144}


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


class _Registry(Mapping):
    """Read-only name -> model class mapping over `_REGISTRY`, importing on access."""

    def __getitem__(self, name):
        return _load(_REGISTRY[name])

    def __iter__(self):
        return iter(_REGISTRY)

    def __len__(self):
        return len(_REGISTRY)


MODELS = _Registry()

# config `init:` value -> "module:function" returning a model with the published weights
_INITIALISERS = {"official_xumx": "xumx_import:load_official_xumx"}


def load_initialiser(init: str):
    """The function that loads the pretrained model named by a system's `init:` setting."""
    if init not in _INITIALISERS:
        raise ConfigError(f"unknown init {init!r}; known: {', '.join(_INITIALISERS)}")
    return _load(_INITIALISERS[init])

# The authors' settings (their configs and model code; REFERENCE.md section 2).
PAPER_KWARGS: dict[str, dict] = {
    "xumx": dict(n_fft=4096, hop_length=1024, max_bin=1487, hidden_size=512, nb_layers=3,
                 nb_channels=2, lstm_dropout=0.4, bidirectional=True),
    "unet": dict(n_fft=4096, hop_length=1024, max_bin=1487, nb_channels=2, levels=6, growth=12,
                 d2_blocks=2, attention_channels=256, attention_d_model=128, attention_heads=8,
                 query_block=2, memory_flange=3, dropout=0.4, dropout_levels=3, pad_mask=0.25),
    "demucs": dict(channels=48, depth=6, kernel_size=8, stride=4, growth=2.0, context=3,
                   lstm_layers=2, rescale=0.1, resample=True, normalize=True,
                   decoders="per_source", nb_channels=2),
    "demucs_baseline": dict(channels=48, depth=6, kernel_size=8, stride=4, growth=2.0, context=3,
                            lstm_layers=2, rescale=0.1, resample=True, normalize=False,
                            decoders="single", nb_channels=2),
    "demucs_baseline_64": dict(channels=64, depth=6, kernel_size=8, stride=4, growth=2.0,
                               context=3, lstm_layers=2, rescale=0.1, resample=True,
                               normalize=False, decoders="single", nb_channels=2),
    # KUIELab-MDX-Net (kuielab/mdx-net Leaderboard_A, configs/model/ConvTDFNet_<source>.yaml).
    "tfc_tdf": dict(n_fft=KUIELAB_N_FFT, hop_length=1024, dim_f=2048, num_blocks=11, layers=3,
                    growth=32, kernel_size=3, bottleneck=8, bias=False, mixer=True, nb_channels=2),
    # demucs v3 conf/config.yaml `hdemucs:` (the paper's repro models): 83.6 M parameters.
    "hdemucs": dict(nb_channels=2, channels=48, channels_time=None, growth=2, nfft=4096, depth=6,
                    rewrite=True, freq_emb=0.2, emb_scale=10, emb_smooth=True, kernel_size=8,
                    time_stride=2, stride=4, context=1, context_enc=0, norm_starts=4,
                    norm_groups=4, dconv_mode=1, dconv_depth=2, dconv_comp=4, dconv_attn=4,
                    dconv_lstm=4, dconv_init=1e-3, rescale=0.1),
    # Sony's per-source D3Net configs (SONY_D3NET) bridged: 11.2 M parameters.
    "xd3net": dict(n_fft=4096, hop_length=1024, max_bin=1600, nb_channels=2, bridge=True,
                   nets=None),
}
PAPER_KWARGS["tfc_tdf_v2"] = dict(PAPER_KWARGS["tfc_tdf"], mixer=False)  # the separators alone
# Registry name of each paper setting.
PAPER_ARCH = {"xumx": "xumx", "unet": "unet", "demucs": "demucs", "demucs_baseline": "demucs",
              "demucs_baseline_64": "demucs", "tfc_tdf": "tfc_tdf", "tfc_tdf_v2": "tfc_tdf", "hdemucs": "hdemucs", "xd3net": "xd3net"}

# A small D3Net for every source of the tiny X-D3Net (config/config.yaml has the same): one band
# split, one pooling level in the bands and two in the full band.
_TINY_D3NET = dict(band_split=[64], band_init=[6, 4], band_layers=[[1, 2, 1], [1, 1, 1]],
                   band_growths=[[4, 6, 4], [2, 2, 2]], band_blocks=[[1, 1, 1], [1, 1, 1]],
                   band_comp=[[1.0, 1.0], [1.0, 1.0]], full_init=6,
                   full_layers=[1, 2, 2, 2, 1], full_growths=[4, 6, 8, 6, 4],
                   full_blocks=[1] * 5, full_comp=[1.0] * 4, final_layers=2, final_growth=4)

# Same architectures, small enough to train for a minute on a CPU with short segments.
TINY_KWARGS: dict[str, dict] = {
    "xumx": dict(n_fft=1024, hop_length=256, max_bin=372, hidden_size=32, nb_layers=1),
    "unet": dict(n_fft=1024, hop_length=256, max_bin=372, levels=3, growth=4, d2_blocks=1,
                 attention_channels=16, attention_d_model=16, attention_heads=2),
    "demucs": dict(channels=8, depth=4, lstm_layers=1, normalize=True, decoders="per_source"),
    "demucs_baseline": dict(channels=8, depth=4, lstm_layers=1, decoders="single"),
    "tfc_tdf": dict(n_fft={"drums": 512, "bass": 2048, "other": 1024, "vocals": 768}, hop_length=256,
                    dim_f=128, num_blocks=5, layers=1, growth=8, bottleneck=4, mixer=True),
    # nfft 1024: four spectral layers reach one frequency at the time branch's stride 256.
    "hdemucs": dict(channels=8, nfft=1024, depth=5),
    "xd3net": dict(n_fft=1024, hop_length=256, max_bin=256,
                   nets={src: _TINY_D3NET for src in SOURCES}),
}


def build_model(name: str, **kwargs):
    """The registered model `name` built with `kwargs`; ConfigError for an unknown name or kwarg."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))} "
                          f"(fix the model name, `arch`, in the config or checkpoint)")
    try:
        return MODELS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r} cannot be built with {kwargs}: {exc} "
                          f"(fix its kwargs in the config)") from exc


def count_parameters(model) -> int:
    """Number of trainable parameters (what the paper's model sizes count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def __getattr__(name):  # `from dannasep.models import XUMX` still works, lazily
    for spec in _REGISTRY.values():
        if spec.endswith(f":{name}"):
            return _load(spec)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", "PAPER_KWARGS", "PAPER_ARCH", "TINY_KWARGS", "build_model",
           "count_parameters", "XUMX", "UNet", "Demucs", "TFCTDF", "HDemucs", "XD3Net"]
