"""CUDA checks: mixed-precision training steps and separation on the GPU match the CPU path."""

import numpy as np
import pytest
import torch

from dannasep.models import TINY_KWARGS, build_model
from dannasep.separation.inference import separate_array
from dannasep.training.objectives import compute_loss

pytestmark = pytest.mark.gpu

LOSSES = {"xumx": "multidomain_complex_mwf", "unet": "multidomain_complex", "demucs": "l1", "tfc_tdf": "mse"}


@pytest.mark.parametrize("arch", sorted(LOSSES))
def test_amp_training_step_on_cuda(arch):
    torch.manual_seed(0)
    model = build_model(arch, **TINY_KWARGS[arch]).cuda()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda")
    mix = torch.randn(2, 2, 44100, device="cuda") * 0.1
    targets = torch.randn(2, 4, 2, 44100, device="cuda") * 0.05
    with torch.autocast("cuda", dtype=torch.float16):
        loss = compute_loss(LOSSES[arch], model, model, mix, targets)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("arch", sorted(LOSSES))
def test_cuda_separation_matches_cpu(arch):
    torch.manual_seed(0)
    model = build_model(arch, **TINY_KWARGS[arch]).eval()
    mix = (np.random.default_rng(0).standard_normal((44100 * 3, 2)) * 0.1).astype(np.float32)
    cfg = {"wiener_iterations": 1, "chunk_seconds": 1.0, "overlap": 0.25}
    cpu = separate_array(model, mix, cfg, "cpu")
    gpu = separate_array(model, mix, cfg, "cuda")
    assert np.allclose(cpu, gpu, atol=1e-3)
