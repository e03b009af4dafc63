"""spark-submit entry point of the sql stage; the arguments are those of `pea sql`.

Example: `spark-submit jobs/sql.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["sql", *sys.argv[1:]]))
