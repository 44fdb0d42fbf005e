"""Stopping the local servers tests start (MLflow, moto) in their own process groups."""
import os
import signal
import subprocess


def stop_group(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the process's group; SIGKILL it when it has not exited after `grace_s` (on a loaded machine a
    server's workers can take longer to finish than a test should wait)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
