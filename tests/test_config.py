import pytest

from rcmae.config import Config, ConfigError, describe, load_config, paper, tiny


def test_paper_preset_has_the_papers_numbers():
    config = paper()
    assert config.features.num_patches == 512
    assert (config.model.depth, config.model.num_heads, config.model.embed_dim) == (12, 6, 384)
    assert (config.pretrain.lambda_con, config.pretrain.lambda_vcr, config.pretrain.lambda_mae) == (0.3, 0.3, 0.4)
    assert config.pretrain.tau == 0.05 and config.pretrain.lr == 1e-4 and config.pretrain.batch_size == 128
    assert config.augment.guidance_scale == 2.5 and (config.augment.steps_min, config.augment.steps_max) == (10, 50)


def test_yaml_round_trip(tmp_path):
    config = tiny().override({"pretrain.tau": 0.1, "model.mask_ratio": 0.5})
    config.to_yaml(tmp_path / "c.yaml")
    assert Config.from_yaml(tmp_path / "c.yaml") == config


@pytest.mark.parametrize("override, message", [
    ({"model.mask_ratio": 1.0}, "mask_ratio"),
    ({"features.n_frames": 65}, "multiple of patch_time"),
    ({"augment.augmenter": "magic"}, "augmenter"),
    ({"augment.steps_min": 60}, "steps_min"),
    ({"pretrain.lambda_mae": -1.0}, "loss weights"),
    ({"nope.key": 1}, "unknown config key"),
])
def test_validation_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny().override(override)


def test_unknown_yaml_keys_and_presets_are_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  width: 3\n")
    with pytest.raises(ConfigError, match="width"):
        load_config(path=tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("huge")
    assert "InfoNCE temperature" in describe(tiny())
