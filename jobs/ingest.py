"""spark-submit entry point of the ingest stage; the arguments are those of `pea ingest`.

Example: `spark-submit jobs/ingest.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
