"""TensorRT latency over real images: ``python tools/benchmark/trt_benchmark.py --COCO_dir DIR --engine_dir ENGINE``.

``--engine_dir`` takes one engine file or a folder of them (the official script's meaning).
"""

import sys

from dfine.cli.export import trt_benchmark_main

if __name__ == "__main__":
    sys.exit(trt_benchmark_main())
