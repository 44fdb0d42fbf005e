import pytest

from rcmae.config import Config, ConfigError, describe, load_config, paper, tiny


def test_paper_preset_has_the_papers_numbers():
    config = paper()
    assert config.features.num_patches == 512
    assert (config.model.depth, config.model.num_heads, config.model.embed_dim) == (12, 6, 384)
    assert (config.pretrain.lambda_con, config.pretrain.lambda_vcr, config.pretrain.lambda_mae) == (0.3, 0.3, 0.4)
    assert config.pretrain.tau == 0.05 and config.pretrain.lr == 1e-4 and config.pretrain.batch_size == 128
    options = config.augment.options
    assert options.guidance_scale == 2.5 and (options.steps_min, options.steps_max) == (10, 50)
    for stage in (config.pretrain, config.finetune):  # "Adam, learning rate 0.0001": no schedule, no clipping
        assert (stage.schedule, stage.warmup_epochs, stage.grad_clip) == ("constant", 0, 0.0)


def test_the_learning_rate_schedules():
    from rcmae.train.loops import lr_factor

    assert [lr_factor("constant", 0, 4)(e) for e in range(4)] == [1.0] * 4
    cosine = lr_factor("cosine", 1, 5)
    assert cosine(0) == 0.5 and cosine(1) == 1.0 and cosine(3) == pytest.approx(0.5) and cosine(5) == 0.0


def test_yaml_round_trip(tmp_path):
    config = tiny().override({"pretrain.tau": 0.1, "model.mask_ratio": 0.5})
    config.to_yaml(tmp_path / "c.yaml")
    assert load_config(path=tmp_path / "c.yaml") == config


@pytest.mark.parametrize("override, message", [
    ({"model.mask_ratio": 1.0}, "mask_ratio"),
    ({"model.embed_dim": 66, "model.num_heads": 3}, "multiples of 4"),
    ({"features.n_frames": 65}, "multiple of patch_time"),
    ({"augment.augmenter": "magic"}, "augmenter"),
    ({"augment.steps_min": 60}, "steps_min"),
    ({"pretrain.lambda_mae": -1.0}, "loss weights"),
    ({"nope.key": 1}, "unknown config key"),
    ({"pretrain.schedule": "step"}, "pretrain.schedule"),
    ({"finetune.schedule": "constant", "finetune.warmup_epochs": 2}, "warmup_epochs needs schedule 'cosine'"),
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


def test_a_partial_file_is_its_preset_plus_its_changes(tmp_path):
    (tmp_path / "tiny.yaml").write_text("preset: tiny\npretrain:\n  epochs: 3\n")
    config = load_config(path=tmp_path / "tiny.yaml")
    assert config == tiny().override({"pretrain.epochs": 3})
    (tmp_path / "paper.yaml").write_text("preset: paper\nmodel:\n  mask_ratio: 0.6\n")
    assert load_config(path=tmp_path / "paper.yaml") == paper().override({"model.mask_ratio": 0.6})
    (tmp_path / "bare.yaml").write_text("finetune:\n  lr: 0.01\n")  # no preset named: --preset, else tiny
    assert load_config("paper", tmp_path / "bare.yaml") == paper().override({"finetune.lr": 0.01})
    assert load_config(path=tmp_path / "bare.yaml").preset == "tiny"


def test_a_file_and_a_different_preset_flag_is_an_error(tmp_path):
    (tmp_path / "tiny.yaml").write_text("preset: tiny\n")
    with pytest.raises(ConfigError, match="preset 'tiny' but --preset 'paper'"):
        load_config("paper", tmp_path / "tiny.yaml")


@pytest.mark.parametrize("key, text, expected", [
    ("pretrain.epochs", "5", 5), ("pretrain.lr", "3e-4", 3e-4), ("pretrain.lr", 1, 1.0),
    ("scale.use_gpu", "true", True), ("scale.num_workers", "none", None), ("augment.prompts", "paper", "paper"),
])
def test_set_values_are_converted_to_the_fields_type(key, text, expected):
    section, name = key.split(".")
    value = tiny().override({key: text}).to_dict()[section][name]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("key, value, expected", [
    ("pretrain.epochs", 5.5, "int"), ("pretrain.epochs", "five", "int"), ("scale.use_gpu", "maybe", "bool"),
    ("pretrain.lr", "fast", "float"), ("pretrain.epochs", None, "int"),
])
def test_set_values_of_the_wrong_type_name_key_value_and_type(key, value, expected):
    with pytest.raises(ConfigError, match=rf"{key}.*{expected}"):
        tiny().override({key: value})


def test_config_built_bare_is_the_tiny_preset_and_its_sections_the_papers_numbers():
    from rcmae.config import Config, section_defaults

    assert Config() == tiny()
    assert section_defaults()["pretrain"]["epochs"] == 400 and section_defaults()["features"]["n_frames"] == 320


@pytest.mark.parametrize("key, value, allowed", [
    ("model.pooling", "sum", "'frequency', 'mean'"), ("pretrain.schedule", "linear", "'constant', 'cosine'"),
    ("audio.pad_mode", 0, "'zeros', 'repeat'"), ("pretrain.contrastive", "nt-xent", "'paper', 'symmetric'"),
])
def test_a_choice_outside_its_literal_names_the_choices(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"^{key}: .* is not one of {allowed}$"):
        tiny().override({key: value})
    assert getattr(getattr(tiny().override({key: allowed.split(", ")[1].strip("'")}), key.split(".")[0]),
                   key.split(".")[1]) == allowed.split(", ")[1].strip("'")


def test_a_section_built_in_python_checks_its_choices_too():
    from rcmae.sections import ModelConfig

    with pytest.raises(ConfigError, match=r"model.pooling must be one of 'frequency', 'mean', got 'sum'"):
        ModelConfig(pooling="sum")


def test_runtime_fields_are_marked_and_left_out_of_what_is_made():
    from rcmae.sections import AugmentConfig

    made = AugmentConfig().outcome()
    assert not {"batch_size", "num_actors", "use_gpu", "gpus_per_actor"} & set(made)
    assert {"augmenter", "variants", "seed", "snr_db_min"} <= set(made)


def test_each_augmenter_has_its_own_options_beside_the_shared_fields():
    from rcmae.augment.audioldm import AudioLDMOptions
    from rcmae.augment.factory_mix import FactoryMixOptions

    config = tiny().override({"augment.augmenter": "audioldm", "augment.model": "cvssp/x", "augment.t0": "0.3"})
    assert isinstance(config.augment.options, AudioLDMOptions) and config.augment.options.t0 == 0.3
    assert config.augment.options.prompts == tiny().augment.options.prompts  # an option both augmenters have
    laid_out = config.to_dict()["augment"]
    assert laid_out["model"] == "cvssp/x" and "snr_db_min" not in laid_out and "options" not in laid_out
    assert Config.from_dict(config.to_dict()) == config
    assert isinstance(tiny().augment.options, FactoryMixOptions)
    with pytest.raises(ConfigError, match=r"augment.model: not an option of augmenter 'factory-mix' \(its options: "
                                          r"prompts, snr_db_min, snr_db_max\)"):
        tiny().override({"augment.model": "cvssp/x"})
    with pytest.raises(ConfigError, match="augment.t0 must be in"):
        tiny().override({"augment.augmenter": "audioldm", "augment.t0": 0})


def test_a_config_file_giving_another_augmenters_option_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("augment:\n  augmenter: masking\n  snr_db_min: 3\n")
    with pytest.raises(ConfigError, match="augment.snr_db_min: not an option of augmenter 'masking'"):
        load_config(path=path)


def test_a_config_file_an_older_rcmae_wrote_still_loads(tmp_path):
    """`rcmae config --out` used to write every augmenter's options: at their defaults they are dropped."""
    path = tmp_path / "old.yaml"
    path.write_text("augment:\n  augmenter: factory-mix\n  snr_db_min: 3.0\n  t0: 0.5\n  time_masks: 2\n")
    assert load_config(path=path).augment.options.snr_db_min == 3.0
    path.write_text("augment:\n  augmenter: factory-mix\n  t0: 0.3\n")
    with pytest.raises(ConfigError, match="augment.t0: not an option of augmenter 'factory-mix'"):
        load_config(path=path)


def test_a_config_an_older_rcmae_recorded_loads_without_the_other_augmenters_options():
    """Older rcmae kept every augmenter's options in `augment`: a checkpoint's config still loads, and a folder's
    recorded settings read as this layout (so a resumed run is not taken for one with other settings)."""
    from rcmae.config import recorded_section

    old = {**tiny().to_dict()["augment"], "model": None, "t0": 0.5, "time_masks": 2, "eta": 0.0}
    assert Config.from_dict({"preset": "tiny", "augment": old}) == tiny()
    assert recorded_section("augment", old).outcome() == tiny().augment.outcome()
    assert recorded_section("augment", {"augmenter": "masking"}).outcome() == {
        "augmenter": "masking", "variants": 2, "seed": 0, "time_masks": 2, "freq_masks": 2, "max_mask_fraction": 0.15}
