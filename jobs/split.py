"""spark-submit entry point of the split stage; the arguments are those of `pea split`.

Example: `spark-submit jobs/split.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["split", *sys.argv[1:]]))
