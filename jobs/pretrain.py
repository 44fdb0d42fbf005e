"""`ray job submit --working-dir . -- python jobs/pretrain.py ...`: same arguments as `rcmae pretrain`.
Joins the cluster named by RAY_ADDRESS (set by `ray job submit`), else starts a local Ray."""

import sys

from rcmae.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
