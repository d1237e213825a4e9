"""The end-to-end CIS benchmark suite (:mod:`facesal_fast.benchmark`), as ``facesal bench``.

python benchmarks/cis_end_to_end.py --quick
python benchmarks/cis_end_to_end.py --presets --quick --threads 1 --models gender,resnet18
"""

import sys

from facesal_fast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
