"""spark-submit entry point of the crossval stage; the arguments are those of `pea crossval`.

Example: `spark-submit jobs/crossval.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["crossval", *sys.argv[1:]]))
