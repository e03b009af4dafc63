"""spark-submit entry point of the select stage; the arguments are those of `pea select`.

Example: `spark-submit jobs/select_features.py --help`

Not named select.py: Python puts this folder first on sys.path, and a select.py
here would shadow the standard library module that Spark imports.
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
