"""The official entry point: ``python train.py -c CONFIG [--use-amp] [--seed N] [-r|-t CKPT] [--test-only]``.

Works under ``torchrun --nproc_per_node=K train.py ...`` too. Same as ``dfine train`` / ``dfine val``.
"""

import sys

from dfine.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
