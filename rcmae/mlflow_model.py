"""A fine-tuned model as an MLflow Model (the pyfunc flavour): what MLflow's Model Registry versions, stages and
serves (`mlflow models serve`, `mlflow.pyfunc.load_model`).

Input: a table with `path` (a WAV file on the machine that scores), and `machine_type` / `machine_id` where the
file's name does not carry them (a DCASE name does). Output, a row per input: `score`, `decision` and `threshold`,
as `rcmae score` and `Detector.score_file` give them. The model's artifacts are its model folder; rcmae's own
source travels with it (`code_paths`), so the environment needs only the pinned packages it names.
"""

from __future__ import annotations

import contextlib
import sys
from importlib import metadata
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

import rcmae
from rcmae.api import Detector
from rcmae.tracking import MlflowTarget

ARTIFACT = "model"  # the model folder's name among the artifacts
MODEL_NAME = "detector"  # the logged model's name in its run
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "path"), ColSpec("string", "machine_type", required=False),
                   ColSpec("string", "machine_id", required=False)]),
    outputs=Schema([ColSpec("double", "score"), ColSpec("boolean", "decision"), ColSpec("double", "threshold")]))
# what scoring imports (rcmae.api and below), pinned at the versions this model was made with
REQUIREMENTS = ("torch", "torchaudio", "numpy", "scipy", "scikit-learn", "safetensors", "soundfile", "pyyaml",
                "pyarrow", "pandas")


class DetectorModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model: a `Detector` over the logged model folder."""

    def load_context(self, context) -> None:
        self.detector = Detector.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        rows = []
        for row in model_input.to_dict("records"):
            result = self.detector.score_file(row["path"], _given(row.get("machine_type")),
                                              _given(row.get("machine_id")))
            rows.append(dict(score=result.score, decision=bool(result.decision), threshold=result.threshold))
        return pd.DataFrame(rows, columns=["score", "decision", "threshold"])


def _given(value) -> str | None:
    """A table cell as a machine field: empty and missing cells are None (the file name then says)."""
    return None if value is None or pd.isna(value) or str(value) == "" else str(value)


def pinned_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def log_detector(target: MlflowTarget, model_dir: str | Path, register: str | None = None) -> str:
    """The model folder logged to the run `target` as an MLflow Model (registered as a new version of `register`
    when given); returns its URI (models:/...)."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(target.uri)  # MLflow's model logging goes through its process-wide client
    try:  # MLflow prints where to view the run on stdout, which carries rcmae's results only
        with contextlib.redirect_stdout(sys.stderr), mlflow.start_run(run_id=target.run_id):
            info = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=DetectorModel(),
                                           artifacts={ARTIFACT: str(model_dir)}, signature=SIGNATURE,
                                           pip_requirements=pinned_requirements(),
                                           code_paths=[str(Path(rcmae.__file__).parent)],
                                           registered_model_name=register)
    finally:
        mlflow.set_tracking_uri(previous)
    return info.model_uri
