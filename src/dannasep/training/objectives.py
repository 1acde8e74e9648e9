"""Map a system's configured loss name to the loss of one batch (see dannasep.losses)."""

from __future__ import annotations

import torch

from ..losses import SVD_PENALTY_WEIGHT, l1_waveform_loss, mse_waveform_loss, svd_penalty, tf_model_loss

# loss name -> (complex MSE, differentiable MWF iterations) for TF models
TF_LOSSES = {
    "multidomain": (False, 0),              # X-scheme baseline: magnitude MSE + 10 (1 + wSDR)
    "multidomain_complex_mwf": (True, 1),   # Danna-Sep X-UMX: complex MSE after one MWF iteration
    "multidomain_complex": (True, 0),       # Danna-Sep U-Net: the same without MWF
}


class _Forward:
    """The wrapped (e.g. DDP) module's forward with the core model's attributes (n_fft, domain)."""

    def __init__(self, wrapped: torch.nn.Module, core: torch.nn.Module):
        self._wrapped, self._core = wrapped, core

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._core, name)


# loss name -> waveform loss of waveform models
WAVEFORM_LOSSES = {"l1": l1_waveform_loss, "mse": mse_waveform_loss}


def compute_loss(loss_name: str, model: torch.nn.Module, core: torch.nn.Module, mix: torch.Tensor,
                 targets: torch.Tensor, precision: str = "float64", margin: int = 0) -> torch.Tensor:
    """Scalar loss of `model` on `mix [batch, channels, samples]` vs `targets [batch, 4, channels, samples]`.

    `model` is what to call (possibly a DDP wrapper), `core` the bare model with its attributes.
    `margin`: samples left out at each end of a waveform loss (KUIELab's Mixer: 8192).
    """
    forward = model if model is core else _Forward(model, core)
    if loss_name in WAVEFORM_LOSSES or loss_name == "l1_svd":
        est = forward(mix).float()
        targets = targets[..., : est.shape[-1]]
        if margin:
            if 2 * margin >= est.shape[-1]:
                raise ValueError(f"loss_margin {margin} leaves nothing of {est.shape[-1]}-sample segments")
            est, targets = est[..., margin:-margin], targets[..., margin:-margin]
        loss = WAVEFORM_LOSSES[loss_name.removesuffix("_svd")](est, targets)
        if loss_name == "l1_svd":  # Hybrid Demucs: + the penalty on the largest singular values
            loss = loss + SVD_PENALTY_WEIGHT * svd_penalty(core).to(loss.device)
        return loss
    if margin:
        raise ValueError(f"loss_margin applies to waveform losses ({', '.join(WAVEFORM_LOSSES)}), not {loss_name!r}")
    complex_mse, iterations = TF_LOSSES[loss_name]
    return tf_model_loss(forward, mix, targets, complex_mse=complex_mse, wiener_iterations=iterations,
                         wiener_dtype=getattr(torch, precision)).total.float()
