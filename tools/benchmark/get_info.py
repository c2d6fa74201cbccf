"""Parameters, MACs and FLOPs of a config's deployed model, offline.

``python tools/benchmark/get_info.py -c CONFIG``
"""

import sys

from dfine.cli.export import get_info_main

if __name__ == "__main__":
    sys.exit(get_info_main())
