"""D-FINE inference with a TensorRT engine on an image, a folder or a video; annotated copies + predictions.json.

Same pipeline as ``dfine predict --backend tensorrt``; see ``--help``.
"""

import sys

from dfine.cli.export import inference_main

if __name__ == "__main__":
    sys.exit(inference_main("tensorrt", prog="trt_inf.py"))
