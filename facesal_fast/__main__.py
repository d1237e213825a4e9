"""``python -m facesal_fast``: the ``facesal`` command."""

import sys

from facesal_fast.cli import main

sys.exit(main())
