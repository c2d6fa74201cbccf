"""Export D-FINE to ONNX with the official command line.

``python tools/deployment/export_onnx.py --check -c CONFIG -r CKPT``

Writes ``CKPT``'s stem ``.onnx`` beside it (opset 17, dynamic batch, simplified); ``--format openvino
tensorrt`` adds the other formats. Same as ``dfine export``; see ``--help``.
"""

import sys

from dfine.cli.export import export_onnx_main

if __name__ == "__main__":
    sys.exit(export_onnx_main())
