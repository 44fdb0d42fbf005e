"""`rcmae export --format onnx` and `rcmae.edge`: the exported detector scores as `Detector` does, without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from rcmae import Detector, edge
from rcmae.cli import main
from rcmae.detect.fusions import edge_methods
from rcmae.export import PooledEncoder
from rcmae.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def exported(finetuned_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "valve_fan"
    assert main(["export", "--checkpoint", str(finetuned_model), "--out", str(out)]) == 0
    return out


def test_the_exported_graph_pools_as_the_model_does(finetuned_model):
    checkpoint = load_checkpoint(finetuned_model)
    specs = torch.randn(3, checkpoint.features.n_mels, checkpoint.features.n_frames)
    with torch.no_grad():
        np.testing.assert_allclose(PooledEncoder(checkpoint.model).eval()(specs).numpy(),
                                   checkpoint.model.eval().embed(specs)[0].numpy(), atol=1e-5, rtol=1e-5)


def test_edge_scores_equal_the_detectors_on_the_toy_factorys_test_clips(finetuned_model, exported, toy_root, tmp_path):
    detector, gateway = Detector.load(finetuned_model), edge.load(exported)
    assert gateway.method == detector.method == "fused" and gateway.machines == detector.machines
    clips = [clip for machine_type in ("fan", "valve")
             for clip in sorted((toy_root / "dev_data" / machine_type / "test").glob("*.wav"))[::6]]
    for clip in clips:
        expected, got = detector.score_file(clip), gateway.score_file(clip)
        assert got.score == pytest.approx(expected.score, rel=1e-4, abs=1e-4), clip.name
        assert got.threshold == pytest.approx(expected.threshold) and got.decision == expected.decision, clip.name
    # a recording longer than a clip: the same windows, the same mean
    wave, rate = sf.read(clips[0], dtype="float32")
    long = np.concatenate([wave, wave[::-1], wave])
    expected = detector.score(long, rate, "fan", "00")
    got = gateway.score(long, rate, "fan", "00")
    assert got.window_scores == pytest.approx(expected.window_scores, rel=1e-4, abs=1e-4)


def test_the_edge_refuses_what_it_cannot_score_by_name(exported, tmp_path):
    gateway = edge.load(exported)
    with pytest.raises(edge.EdgeError, match="unknown machine pump/00: this model knows fan/00"):
        gateway.score(np.ones(32000), 16000, "pump", "00")
    with pytest.raises(edge.EdgeError, match="audio at 44100 Hz: the edge scores audio at the model's 16000 Hz"):
        gateway.score(np.ones(88200), 44100, "fan", "00")
    with pytest.raises(edge.EdgeError, match="silent"):
        gateway.score(np.zeros(32000), 16000, "fan", "00")
    with pytest.raises(edge.EdgeError, match="not an rcmae export folder"):
        edge.load(tmp_path)
    settings = json.loads((exported / edge.SETTINGS).read_text())
    assert settings["members"] == ["stats", "mahalanobis", "rhythm"]


def test_the_edge_runs_without_torch_or_ray(exported, toy_root):
    clip = sorted((toy_root / "dev_data" / "valve" / "test").glob("*.wav"))[0]
    code = (f"import sys; from rcmae import edge; r = edge.load({str(exported)!r}).score_file({str(clip)!r}); "
            f"heavy = sorted(m for m in ('torch', 'torchaudio', 'ray', 'pyarrow', 'sklearn') if m in sys.modules); "
            f"print(heavy, r.decision in (True, False))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] True"


def test_a_method_the_edge_cannot_compute_is_refused(finetuned_model, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(finetuned_model), "--out", str(tmp_path / "e"), "--method",
                 "rhythm"]) == 0
    assert edge.load(tmp_path / "e").method == "rhythm"
    from rcmae.errors import RcmaeError
    from rcmae.export import export_edge

    with pytest.raises(RcmaeError, match="score method 'knn' needs knn, which the edge runtime does not compute"):
        export_edge(finetuned_model, tmp_path / "k", "knn")


@pytest.mark.parametrize("method", [m for m in edge_methods() if m != "fused"])  # fused: the test above
def test_every_method_export_offers_scores_on_the_edge_as_the_detector_does(finetuned_model, toy_root, tmp_path,
                                                                           method):
    assert main(["export", "--checkpoint", str(finetuned_model), "--out", str(tmp_path / "e"), "--method",
                 method]) == 0
    detector, gateway = Detector.load(finetuned_model, method), edge.load(tmp_path / "e")
    for clip in sorted((toy_root / "dev_data" / "fan" / "test").glob("*.wav"))[::20]:
        expected, got = detector.score_file(clip), gateway.score_file(clip)
        assert got.score == pytest.approx(expected.score, rel=1e-4, abs=1e-4), clip.name
        assert got.threshold == pytest.approx(expected.threshold) and got.decision == expected.decision, clip.name
