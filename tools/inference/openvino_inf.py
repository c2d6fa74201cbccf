"""D-FINE inference with OpenVINO on an image, a folder or a video; annotated copies + predictions.json.

Same pipeline as ``dfine predict --backend openvino``; see ``--help``.
"""

import sys

from dfine.cli.export import inference_main

if __name__ == "__main__":
    sys.exit(inference_main("openvino", prog="openvino_inf.py"))
