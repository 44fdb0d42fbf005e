import math

import pytest
import torch

from rcmae import losses


def test_mae_loss_counts_masked_patches_only():
    pred = torch.zeros(1, 3, 4)
    target = torch.stack([torch.full((4,), 1.0), torch.full((4,), 2.0), torch.full((4,), 3.0)])[None]
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    assert losses.mae_loss(pred, target, mask).item() == pytest.approx((1 + 9) / 2)


def test_info_nce_hand_computed():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each anchor: positive similarity 1, two negatives at similarity 0, tau = 1
    assert losses.info_nce(z, z.clone(), tau=1.0).item() == pytest.approx(math.log((math.e + 2) / math.e))


def test_eq3_as_written_hand_computed():
    # originals e1, e2; augmented views e1 and (e1 + e2) / sqrt 2; tau = 0.5
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    # anchor 1: positive cos 1, negative (view 2) cos c; anchor 2: positive cos c, negative (view 1) cos 0
    first = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(c / 0.5)))
    second = -math.log(math.exp(c / 0.5) / (math.exp(c / 0.5) + math.exp(0.0)))
    assert losses.info_nce_paper(z_a, z_b, tau=0.5).item() == pytest.approx((first + second) / 2)
    # one-directional: negatives come from the augmented view only, so swapping the views changes the value
    assert losses.info_nce_paper(z_b, z_a, tau=0.5).item() != pytest.approx((first + second) / 2)


def test_info_nce_lower_for_aligned_pairs_than_shuffled():
    torch.manual_seed(0)
    z_a = torch.randn(32, 16)
    aligned = losses.info_nce(z_a, z_a + 0.05 * torch.randn(32, 16), tau=0.05)
    shuffled = losses.info_nce(z_a, z_a[torch.randperm(32)], tau=0.05)
    assert aligned < shuffled


def test_info_nce_is_invariant_to_embedding_scale():
    torch.manual_seed(1)
    z_a, z_b = torch.randn(8, 4), torch.randn(8, 4)
    assert losses.info_nce(z_a, z_b, 0.1).item() == pytest.approx(losses.info_nce(3 * z_a, 0.5 * z_b, 0.1).item(),
                                                                   rel=1e-5)


def test_variance_hinge_hand_computed():
    z = torch.tensor([[0.0, 5.0], [2.0, 5.0]])  # dim 0: var 2 (above the hinge); dim 1: var 0
    expected = (0.0 + (1 - math.sqrt(1e-4))) / 2
    assert losses.variance_loss(z).item() == pytest.approx(expected, rel=1e-5)


def test_covariance_hand_computed():
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # cov [[2, 2], [2, 2]]: off-diagonal 2 * 2^2 / d=2
    assert losses.covariance_loss(z).item() == pytest.approx(4.0)
    torch.testing.assert_close(losses.covariance_matrix(z), torch.full((2, 2), 2.0))


def test_vcr_is_zero_for_unit_variance_decorrelated_embeddings():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * math.sqrt(3 / 4)
    assert losses.covariance_loss(z).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.variance_loss(z).item() == 0.0
    assert losses.vcr_loss(z).item() == pytest.approx(0.0, abs=1e-7)


def test_vcr_is_positive_for_collapsed_embeddings():
    assert losses.vcr_loss(torch.ones(16, 8)).item() > 0.4


def test_supcon_hand_computed():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # anchors 0 and 1: positive sim 1, the other sample sim 0; anchor 2 has no positive and is left out
    assert losses.supcon_loss(z, labels, tau=1.0).item() == pytest.approx(math.log((math.e + 1) / math.e))


def test_supcon_prefers_label_clusters():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mixed = clustered[[0, 2, 1, 3]]
    assert losses.supcon_loss(clustered, labels, 0.1) < losses.supcon_loss(mixed, labels, 0.1)


def test_weighted_totals():
    one, two, three = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    assert losses.rcmae_loss(one, two, three, 0.3, 0.3, 0.4).item() == pytest.approx(0.3 + 0.6 + 1.2)
    assert losses.stage2_loss(one, two, 0.5, 0.5).item() == pytest.approx(1.5)
