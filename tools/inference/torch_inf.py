"""D-FINE inference with PyTorch on an image, a folder or a video; annotated copies + predictions.json.

Same pipeline as ``dfine predict --backend torch``; see ``--help``.
"""

import sys

from dfine.cli.export import inference_main

if __name__ == "__main__":
    sys.exit(inference_main("torch", prog="torch_inf.py"))
