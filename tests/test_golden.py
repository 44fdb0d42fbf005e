"""Golden values: a seeded tiny model's forward pass, each loss term of both stages and one detector fit, pinned
to 1e-5. A change that moves any of these numbers (a refactor of the model, a loss, the RNG order, the detector)
fails here and must say why it changed them."""

import numpy as np
import pytest
import torch

from encoded_values import encoded as make_encoded
from rcmae.config import tiny
from rcmae.data.classes import ClipClasses
from rcmae.detect.calibration import fit_detector
from rcmae.detect.detector import anomaly_scores
from rcmae.models.mae import RCMAE
from rcmae.models.objectives import FinetuneObjective, PretrainObjective
from rcmae.sections import ScoreConfig

TOL = dict(rel=1e-5, abs=1e-6)


def test_a_seeded_forward_pass_and_each_term_of_both_objectives():
    torch.manual_seed(0)
    config = tiny()
    model = RCMAE(model=config.model, features=config.features).eval()
    generator = torch.Generator().manual_seed(1)
    original = torch.randn(4, 128, 64, generator=generator)
    augmented = original + 0.1 * torch.randn(4, 128, 64, generator=generator)
    with torch.no_grad():
        pooled, z = model(original)
        torch.manual_seed(2)
        stage1 = PretrainObjective(model, config.pretrain)(original, augmented)
        model.with_classifier(2)  # its initial weights drawn from the generator where stage 1 left it
        torch.manual_seed(3)
        stage2 = FinetuneObjective(model, config.finetune)(original, torch.tensor([0, 1, 0, 1]))
    assert pooled[0, :4].tolist() == pytest.approx([-0.2044090, 1.4909815, 2.5451808, 1.3253320], **TOL)
    assert float(pooled.sum()) == pytest.approx(1737.9432, **TOL)
    assert z[0, :4].tolist() == pytest.approx([-0.4877028, 0.2032109, -0.4119151, 0.5998313], **TOL)
    assert {k: float(v) for k, v in stage1.items()} == pytest.approx(
        dict(contrastive=1.1750847, vcr=0.5743575, mae=1.3120599, loss=1.0496567, z_std=0.0357295), **TOL)
    assert {k: float(v) for k, v in stage2.items()} == pytest.approx(
        dict(supcon=1.0314722, ce=0.7144731, loss=0.8729727, accuracy=0.5, z_std=0.0213448), **TOL)


def test_one_detector_fit_and_score():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20, 6))
    encoded = make_encoded(train, log_probs=np.zeros((20, 1)))
    detector = fit_detector(encoded, ["a/00"] * 20, ClipClasses.as_machine(["a/00"], "a/00", 20),
                            ScoreConfig(components=3))
    probe = rng.normal(size=(2, 6))
    probe_encoded = make_encoded(probe, probe, np.zeros((2, 1)))
    probe_clips = ClipClasses.as_machine(["a/00"], "a/00", 2)
    scores = anomaly_scores("mahalanobis", probe_encoded, ["a/00"] * 2, probe_clips, detector)
    assert scores.tolist() == pytest.approx([4.7735652, 4.4270586], **TOL)
    # thresholds from held-out train scores (rcmae 0.3; in-sample ones, 8.7611077 here, understate a new clip's)
    assert detector.thresholds["mahalanobis"]["a/00"] == pytest.approx(14.0531373, **TOL)
    assert detector.thresholds["embedding"]["a/00"] == pytest.approx(1.1717752, **TOL)
    assert anomaly_scores("stats", probe_encoded, ["a/00"] * 2, probe_clips, detector).tolist() == pytest.approx(
        [4.1802586, 4.4001628], **TOL)  # detector format 4: the profiles shrunk by Ledoit-Wolf (was 0.1)
    assert anomaly_scores("fused", probe_encoded, ["a/00"] * 2, probe_clips, detector).tolist() == pytest.approx(
        [-0.6443400, -0.5571282], **TOL)
    assert detector.thresholds["fused"]["a/00"] == pytest.approx(1.4945248, **TOL)
    assert detector.threshold_methods["id_logprob"] == {"a/00": "constant"}
    for method, values, threshold in (("rhythm", [4.1802586, 4.4001628], 10.4925661),
                                      ("patch", [-0.3532782, 0.0697267], 3.2592626),
                                      ("combined", [-0.6443400, -0.5571282], 1.4945248)):
        assert anomaly_scores(method, probe_encoded, ["a/00"] * 2, probe_clips, detector).tolist() == pytest.approx(
            values, **TOL), method
        assert detector.thresholds[method]["a/00"] == pytest.approx(threshold, **TOL), method


def test_the_losses_run_in_fp32_under_bf16_autocast():
    """The encoder may run in bf16; every loss term is computed in fp32 (on CUDA the same code path as this CPU
    autocast), so each term is within bf16 rounding of the fp32 run, not off by the logits' rounding."""
    torch.manual_seed(0)
    config = tiny()
    model = RCMAE(model=config.model, features=config.features).eval()
    original = torch.randn(4, 128, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(2)
        exact = PretrainObjective(model, config.pretrain)(original, original.flip(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.manual_seed(2)
            mixed = PretrainObjective(model, config.pretrain)(original, original.flip(0))
    assert all(value.dtype == torch.float32 for value in mixed.values())
    assert {k: float(v) for k, v in mixed.items()} == pytest.approx({k: float(v) for k, v in exact.items()}, rel=0.05)


def golden_clip() -> np.ndarray:
    t = np.arange(16000) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(16000)).astype(
        np.float32)


def test_each_writing_augmenters_output_on_a_seeded_clip(tiny_audioldm):
    from rcmae.augment.audioldm import AudioLDMAugmenter, AudioLDMOptions
    from rcmae.augment.factory_mix import FactoryMix, FactoryMixOptions
    from rcmae.augment.specaugment import MaskOptions, SpecAugment

    mixed = FactoryMix(FactoryMixOptions()).augment([golden_clip()], [7])[0]
    assert mixed.data[:4].tolist() == pytest.approx([-0.3473935, 0.0724292, 0.1552497, 0.0969816], **TOL)
    assert float(np.abs(mixed.data).sum()) == pytest.approx(3329.2024, **TOL)
    assert (mixed.provenance["family"], mixed.provenance["snr_db"]) == ("pneumatic", 5.588)
    masked = SpecAugment(MaskOptions()).augment([np.random.default_rng(0).normal(size=(128, 64)).astype(
        np.float32)], [4])[0]
    assert float(masked.data.sum()) == pytest.approx(-64.258995, **TOL)
    assert masked.provenance["freq_masks"] == [[108, 14], [57, 17]]
    assert masked.provenance["time_masks"] == [[54, 9], [4, 9]]
    sdedit = AudioLDMAugmenter(AudioLDMOptions(model=str(tiny_audioldm), steps_min=2, steps_max=3, t0=0.5),
                               device="cpu").augment([golden_clip()], [7])[0]
    assert sdedit.provenance["steps"] == 3
    assert sdedit.data[:4].tolist() == pytest.approx([0.0188181, 0.0137039, 0.0134794, -0.0034780], rel=1e-4,
                                                     abs=1e-6)
    assert float(np.abs(sdedit.data).sum()) == pytest.approx(2422.877, rel=1e-4)
