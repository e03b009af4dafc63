"""spark-submit entry point of the explain stage; the arguments are those of `pea explain`.

Example: `spark-submit jobs/explain.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["explain", *sys.argv[1:]]))
