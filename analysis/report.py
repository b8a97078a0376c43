"""Build the report of one or more sweeps: ``python analysis/report.py RESULTS_DIR [--out DIR]``
(the same as ``mmi-ray analyze``)."""

import sys

from mmi_ray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["analyze", *sys.argv[1:]]))
