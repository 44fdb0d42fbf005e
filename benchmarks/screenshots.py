"""What a user sees of a sweep, in a real browser: runs the smoke sweep as a Ray job on a local `ray start`
cluster, then takes headless Chromium screenshots of the Ray dashboard's Jobs page, TensorBoard's HParams table
and its time series over the sweep's folder. Needs Debian's `chromium` (or CHROMIUM=path).

    python benchmarks/screenshots.py --out runs/screenshots      # PNGs in runs/screenshots/*.png
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"{url} did not answer in {seconds:.0f} s") from None
            time.sleep(1)


def screenshot(browser: str, url: str, path: Path, wait_ms: int = 15000) -> None:
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1500,1000", f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=180)
    print(f"wrote {path} ({url})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("screenshots: no chromium found (apt-get install chromium, or set CHROMIUM)")
    bin_dir = Path(sys.executable).parent
    dashboard = free_port()
    # Ray >= 2.59 asks local clusters for a token: the CLI calls share one through the environment
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(16))
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(bin_dir / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
                    "--num-cpus=2", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    "--include-dashboard=true", "--disable-usage-stats"], check=True, env=env, capture_output=True)
    tensorboard = None
    try:
        data = out / "data"
        if not (data / "manifest.json").exists():
            subprocess.run([str(bin_dir / "rcmae"), "synth", "--out", str(data), "--preset", "small"], check=True,
                           stdout=subprocess.DEVNULL)
        address = f"http://127.0.0.1:{dashboard}"
        subprocess.run([str(bin_dir / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(ROOT),
                        "--", "python", "jobs/tune.py", "--space", "tune_spaces/smoke.yaml", "--data",
                        str(data / "dev_data" / "valve"), "--out", str(out / "tune")],
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        screenshot(browser, f"{address}/#/jobs", out / "dashboard_jobs.png")
        board = free_port()
        tensorboard = subprocess.Popen([str(bin_dir / "tensorboard"), "--logdir", str(out / "tune" / "smoke"),
                                        "--host", "127.0.0.1", "--port", str(board)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"http://127.0.0.1:{board}/")
        screenshot(browser, f"http://127.0.0.1:{board}/#hparams", out / "tensorboard_hparams.png")
        screenshot(browser, f"http://127.0.0.1:{board}/#timeseries", out / "tensorboard_timeseries.png")
    finally:
        if tensorboard is not None:
            tensorboard.terminate()
        subprocess.run([str(bin_dir / "ray"), "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
