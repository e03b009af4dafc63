"""spark-submit entry point of the score stage; the arguments are those of `pea score`.

Example: `spark-submit jobs/score.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
