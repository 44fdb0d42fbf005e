"""The main job for `ray job submit --working-dir . -- python jobs/run.py [--data DIR] [--out DIR] ...`:
the same arguments as `rcmae run`. Joins the cluster named by RAY_ADDRESS, else starts a local Ray."""

import sys

from rcmae.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
