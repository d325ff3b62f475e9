#!/usr/bin/env bash
# check.sh CODE_DIR PYTHON COMMAND SCRIPT GPUS SETUP...: after the code push, in the code
# folder and after the setup lines (as a task would): python, the command or script, GPUs.
cd -- "$1" || exit 11
py=$2 cmd=$3 script=$4 gpus=$5
shift 5
# shellcheck source=lib/setup_lines.sh
. lib/setup_lines.sh
command -v -- "$py" >/dev/null 2>&1 || exit 12
[[ -z $cmd ]] || command -v -- "$cmd" >/dev/null 2>&1 || exit 14
[[ -z $script || -f $script ]] || exit 15
if ((gpus)); then
  out=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>&1) || {
    printf '%s\n' "$out" >&2; exit 16; }
  printf '%s\n' "$out"
fi
exit 0
