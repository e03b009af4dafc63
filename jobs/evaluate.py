"""spark-submit entry point of the evaluate stage; the arguments are those of `pea evaluate`.

Example: `spark-submit jobs/evaluate.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
