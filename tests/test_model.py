import pytest
import torch

from rcmae.config import tiny
from rcmae.errors import RcmaeError
from rcmae.models.mae import RCMAE
from rcmae.models.objectives import FinetuneObjective, PretrainObjective


@pytest.fixture
def model_and_config():
    torch.manual_seed(0)
    config = tiny()
    return RCMAE(model=config.model, features=config.features, num_classes=3), config


@pytest.mark.parametrize("ratio", [0.5, 0.6, 0.75])
def test_masking_keeps_exactly_the_configured_share(ratio):
    x = torch.randn(4, 64, 8)
    visible, mask, ids_restore = RCMAE.random_masking(x, ratio)
    keep = int(64 * (1 - ratio))
    assert visible.shape == (4, keep, 8)
    assert torch.all(mask.sum(dim=1) == 64 - keep)
    # the visible tokens are exactly the unmasked ones
    for b in range(4):
        unmasked = x[b][mask[b] == 0]
        assert torch.equal(torch.sort(visible[b], dim=0).values, torch.sort(unmasked, dim=0).values)


def test_shapes_through_encoder_and_decoder(model_and_config):
    model, config = model_and_config
    specs = torch.randn(2, config.features.n_mels, config.features.n_frames)
    latent, mask, restore = model.encode(specs, 0.75)
    keep = int(config.features.num_patches * 0.25)
    assert latent.shape == (2, 1 + keep, config.model.embed_dim)
    pred = model.decode(latent, restore)
    assert pred.shape == (2, config.features.num_patches, config.features.patch_dim)
    pooled, z = model(specs)
    assert z.shape == (2, config.model.proj_dim) and model.classify(pooled).shape == (2, 3)


def test_paper_preset_has_512_tokens_and_vit_s():
    from rcmae.config import paper

    config = paper()
    model = RCMAE(model=config.model, features=config.features)
    assert model.pos_embed.shape == (1, 512, 384)
    assert len(model.encoder.layers) == 12


def test_a_few_steps_lower_the_stage1_loss(model_and_config):
    model, config = model_and_config
    torch.manual_seed(1)
    original = torch.randn(16, config.features.n_mels, config.features.n_frames)
    augmented = original + 0.3 * torch.randn_like(original)
    objective = PretrainObjective(model, config.pretrain)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        torch.manual_seed(2)  # the same mask each step: the loss change is the model's
        terms = objective(original, augmented)
        first = first if first is not None else {k: v.item() for k, v in terms.items()}
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    torch.manual_seed(2)
    last = objective(original, augmented)
    for name in ("loss", "contrastive", "mae"):
        assert last[name].item() < first[name], name


def test_a_few_steps_lower_the_stage2_loss(model_and_config):
    model, config = model_and_config
    torch.manual_seed(3)
    specs = torch.randn(12, config.features.n_mels, config.features.n_frames)
    labels = torch.tensor([0, 1, 2] * 4)
    objective = FinetuneObjective(model, config.finetune)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = objective(specs, labels)
    for _ in range(15):
        terms = objective(specs, labels)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    last = objective(specs, labels)
    assert last["loss"] < first["loss"] and last["ce"] < first["ce"] and last["supcon"] < first["supcon"]


def test_stage2_without_head_says_so():
    config = tiny()
    model = RCMAE(model=config.model, features=config.features)
    with pytest.raises(RcmaeError, match="fine-tune"):
        model.classify(torch.zeros(1, config.model.embed_dim))


def test_frequency_pooling_averages_each_row_over_its_visible_tokens(model_and_config):
    model, config = model_and_config
    rows, cols = config.features.grid
    width = config.model.embed_dim
    tokens = torch.randn(2, rows * cols, width)
    latent = torch.cat([torch.zeros(2, 1, width), tokens], dim=1)  # class token first, left out
    whole = model.pool(latent)
    assert whole.shape == (2, rows * width) == (2, model.pooled_dim)
    torch.testing.assert_close(whole, tokens.reshape(2, rows, cols, width).mean(dim=2).reshape(2, -1))
    # masked: only visible tokens count, each in its own row, whatever order masking left them in
    visible, mask, ids_restore = RCMAE.random_masking(tokens, 0.5)
    pooled = model.pool(torch.cat([torch.zeros(2, 1, width), visible], dim=1), ids_restore)
    grid_mask = (1 - mask).reshape(2, rows, cols, 1)
    expected = (tokens.reshape(2, rows, cols, width) * grid_mask).sum(2) / grid_mask.sum(2).clamp(min=1)
    torch.testing.assert_close(pooled, expected.reshape(2, -1))


def test_mean_pooling_option():
    config = tiny().override({"model.pooling": "mean"})
    model = RCMAE(model=config.model, features=config.features)
    latent = torch.randn(2, 1 + config.features.num_patches, config.model.embed_dim)
    torch.testing.assert_close(model.pool(latent), latent[:, 1:].mean(dim=1))
    assert model.projection.in_features == config.model.embed_dim


def test_mae_weight_init_is_xavier_with_zero_biases_and_unit_norms():
    config = tiny().override({"model.weight_init": "mae"})
    torch.manual_seed(0)
    model = RCMAE(model=config.model, features=config.features, num_classes=3)
    linear = model.patch_embed
    bound = (6 / (linear.in_features + linear.out_features)) ** 0.5
    assert linear.weight.abs().max() <= bound and linear.weight.abs().max() > 0.9 * bound
    assert torch.all(linear.bias == 0) and torch.all(model.classifier.bias == 0)
    assert torch.all(model.encoder_norm.weight == 1) and torch.all(model.encoder_norm.bias == 0)
    torch.manual_seed(0)
    default = RCMAE(model=tiny().model, features=config.features, num_classes=3)
    assert not torch.all(default.patch_embed.bias == 0)  # PyTorch's default draws biases
