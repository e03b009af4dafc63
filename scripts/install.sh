#!/usr/bin/env bash
# Install pea-spark and its pinned stack into a virtual environment.
#
# Needs Python 3.11, Java 17 and a C++17 compiler. Horovod ships as source only,
# so the first install compiles it (about 3 minutes on 2 cores) and keeps the
# wheel in $PEA_WHEEL_CACHE; later installs reuse that wheel.
#
# Environment: PYTHON (default python3.11, else python3), VENV (default .venv),
# PEA_WHEEL_CACHE (default ~/.cache/pea-spark/wheels).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
WHEELS=${PEA_WHEEL_CACHE:-$HOME/.cache/pea-spark/wheels}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}

fail() { echo "install.sh: $*" >&2; exit 1; }

[ -n "$PYTHON" ] || fail "python3.11 not found: install Python 3.11 or set PYTHON=/path/to/python3.11"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || fail "$PYTHON is $("$PYTHON" -V 2>&1); tensorflow-cpu 2.15 and horovod 0.28 need Python 3.11"
command -v java >/dev/null || fail "java not found: install a Java 17 runtime (Spark 4.0 needs Java 17 or 21)"
command -v c++ >/dev/null || command -v g++ >/dev/null \
  || fail "no C++ compiler found: install g++ (Horovod is compiled from source)"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
# petastorm 0.13.1 requires setuptools < 70; installing that first avoids a downgrade later.
"${PIP[@]}" install --quiet --upgrade pip wheel "setuptools<70"

# TensorFlow first: Horovod's build compiles against the installed TensorFlow.
# CMake 4 cannot configure Horovod's bundled Gloo, so a 3.x CMake goes into the venv.
"${PIP[@]}" install --quiet -c constraints.txt tensorflow-cpu keras "cmake>=3.25,<4"

mkdir -p "$WHEELS"
if ! ls "$WHEELS"/horovod-0.28.1-*.whl >/dev/null 2>&1; then
  echo "install.sh: building the Horovod wheel (once; cached in $WHEELS)"
  PATH="$PWD/$VENV/bin:$PATH" HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 \
    HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    "${PIP[@]}" wheel --quiet --no-deps --no-build-isolation horovod==0.28.1 -w "$WHEELS"
fi
"${PIP[@]}" install --quiet "$WHEELS"/horovod-0.28.1-*.whl -c constraints.txt
"${PIP[@]}" install --quiet -c constraints.txt -e ".[test]"
"$VENV/bin/python" -c 'import horovod.tensorflow, pyspark, delta, petastorm, lime, imblearn' \
  || fail "the installed packages do not import; see the messages above"
echo "install.sh: done; run $VENV/bin/pea --help"
