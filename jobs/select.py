"""spark-submit entry point of the select stage; the arguments are those of `pea select`.

Example: `spark-submit jobs/select.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
