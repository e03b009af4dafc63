"""spark-submit entry point of the train stage; the arguments are those of `pea train`.

Example: `spark-submit jobs/train.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
