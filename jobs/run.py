"""spark-submit entry point of the run stage; the arguments are those of `pea run`.

Example: `spark-submit jobs/run.py --help`
"""

import sys

from pea_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
