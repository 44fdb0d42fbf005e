"""rcmae: RC-MAE anomalous sound detection. `from rcmae import Detector` scores waveforms and files with a
fine-tuned model, without Ray (see `rcmae.api`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rcmae")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    """`Detector` and `Result` load torch and the model code only when asked for (the CLI starts without them)."""
    if name in ("Detector", "Result"):
        from rcmae import api

        return getattr(api, name)
    raise AttributeError(f"module 'rcmae' has no attribute {name!r}")


__all__ = ["Detector", "Result", "__version__"]
