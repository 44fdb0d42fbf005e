"""The main job for `ray job submit --working-dir . -- python jobs/run.py [--data DIR] [--out DIR] ...`:
the same arguments as `rcmae run`. Joins the cluster named by RAY_ADDRESS, else starts a local Ray.

On a cluster, pass the job its environment with `--runtime-env cluster/runtime_env/installed.yaml` (the model
cache on shared storage, plain log lines; for images with rcmae installed) or `cluster/runtime_env/pip.yaml`
(the same plus rcmae's pinned requirements and this checkout on the import path, for images without rcmae);
every jobs/*.py takes the same."""

import sys

from rcmae.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
