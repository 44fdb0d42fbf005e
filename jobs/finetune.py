"""`ray job submit --working-dir . -- python jobs/finetune.py ...`: same arguments as `rcmae finetune`.
Joins the cluster named by RAY_ADDRESS (set by `ray job submit`), else starts a local Ray."""

import sys

from rcmae.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
