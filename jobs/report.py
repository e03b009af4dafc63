"""spark-submit entry point of the report stage; the arguments are those of `pea report`.

Example: `spark-submit jobs/report.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
