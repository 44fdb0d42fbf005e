"""The GPU paths, run where a CUDA device is (skipped elsewhere, with the reason shown by `pytest -ra`)."""

import pytest
import torch

from rcmae.config import tiny
from rcmae.models.mae import RCMAE
from rcmae.models.objectives import PretrainObjective
from rcmae.train.loops import autocast

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bf16 autocast path)")]


def test_a_bf16_autocast_training_step_on_cuda_is_finite_and_moves_the_weights():
    device = torch.device("cuda")
    config = tiny()
    torch.manual_seed(0)
    model = RCMAE(model=config.model, features=config.features).to(device)
    objective = PretrainObjective(model, config.pretrain)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.pretrain.lr)
    original = torch.randn(8, 128, 64, device=device)
    before = [p.detach().clone() for p in model.parameters()]
    with autocast(device):
        terms = objective(original, original + 0.1 * torch.randn_like(original))
    terms["loss"].backward()
    optimizer.step()
    assert torch.isfinite(terms["loss"]) and all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
