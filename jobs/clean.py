"""spark-submit entry point of the clean stage; the arguments are those of `pea clean`.

Example: `spark-submit jobs/clean.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["clean", *sys.argv[1:]]))
