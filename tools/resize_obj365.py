"""Objects365: resize images whose longer edge exceeds 640 px and scale their boxes (README, step 6).

    python tools/resize_obj365.py --base_dir ${BASE_DIR}

Reads ``{train,val}/new_zhiyuan_objv2_{train,val}.json`` (written by ``tools/remap_obj365.py``),
saves large images beside the originals as ``*_resized.jpg`` and writes
``new_zhiyuan_objv2_{train,val}_resized.json``, the files ``obj365_detection.yml`` reads.
"""

from __future__ import annotations

import argparse
import sys

from dfine.data.objects365 import IO_WORKERS, MAX_SIZE, resize_objects365


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_dir", required=True, help="Objects365 data folder holding train/ and val/")
    parser.add_argument("--max_size", type=int, default=MAX_SIZE, help="longest edge after resizing (640)")
    parser.add_argument("--workers", type=int, default=IO_WORKERS, help="threads (default 8)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    args = parser.parse_args(argv)
    results = resize_objects365(args.base_dir, max_size=args.max_size, workers=args.workers, splits=args.splits)
    for result in results:
        print(f"{result.json_file}: {result.resized} images resized, {result.unchanged} unchanged")
        for failure in result.failed:
            print(f"  left out (unreadable): {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
