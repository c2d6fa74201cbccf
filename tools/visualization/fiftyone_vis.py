"""Browse a COCO-format set and a model's predictions in FiftyOne (``pip install dfine[viz]``).

``python tools/visualization/fiftyone_vis.py -c CONFIG -r CKPT`` loads the config's validation set
(``--images`` / ``--annotations`` override it); ``--no-launch`` builds the dataset without the app.
Without FiftyOne, ``dfine visualize`` writes predictions beside ground truth as images and HTML.
"""

import sys

from dfine.cli.visualize import fiftyone_main

if __name__ == "__main__":
    sys.exit(fiftyone_main())
