"""Objects365: move val samples 5000..800000 into the training set (D-FINE README, step 5).

    python tools/remap_obj365.py --base_dir ${BASE_DIR}

Reads ``train/zhiyuan_objv2_train.json`` and ``val/zhiyuan_objv2_val.json`` under ``--base_dir`` and
writes ``train/new_zhiyuan_objv2_train.json`` and ``val/new_zhiyuan_objv2_val.json``. The moved images
are expected under ``train/images_from_val`` (README step 3; ``--copy-images`` does that copy).
"""

from __future__ import annotations

import argparse
import sys

from dfine.data.objects365 import IMAGES_FROM_VAL, VAL_KEEP, VAL_MOVE_END, remap_objects365


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_dir", required=True, help="Objects365 data folder holding train/ and val/")
    parser.add_argument("--val_keep", type=int, default=VAL_KEEP, help="val images kept as val (default 5000)")
    parser.add_argument("--move_end", type=int, default=VAL_MOVE_END, help="end of the moved range (800000)")
    parser.add_argument("--copy-images", action="store_true", help=f"copy val/images/v1,v2 to train/{IMAGES_FROM_VAL}")
    args = parser.parse_args(argv)
    result = remap_objects365(args.base_dir, keep=args.val_keep, move_end=args.move_end, copy_images=args.copy_images)
    print(f"moved {result.moved_images} val images to train, kept {result.kept_val_images} in val")
    if result.dropped_images:
        print(f"dropped {result.dropped_images} val images past position {args.move_end}")
    if result.renumbered_ids:
        print("moved image/annotation ids collided with train ids and were shifted past them")
    print(f"New training annotations saved to {result.train_json}")
    print(f"New validation annotations saved to {result.val_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
