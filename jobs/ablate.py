"""`ray job submit --working-dir . -- python jobs/ablate.py --data DIR --out DIR ...`: the same arguments as
`rcmae ablate`. Joins the cluster named by RAY_ADDRESS, else starts a local Ray."""

import sys

from rcmae.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
