#!/usr/bin/env bash
# preflight.sh ROOT PROJECT PYTHON SETUP...: is the root writable, is python there?
# (Before the code is pushed; setup lines that fail here are only reported.)
# shellcheck source=lib/expand_root.sh
. lib/expand_root.sh
# shellcheck source=lib/writable.sh
. lib/writable.sh
writable "$r"
py=$3; cd -- "$r/$2/code" 2>/dev/null || cd || exit 11
shift 3
failed=
for line; do eval "$line" </dev/null >/dev/null 2>&1 || failed=$line; done
command -v -- "$py" >/dev/null 2>&1 || {
  [[ -z $failed ]] || printf 'a setup line failed: %s\n' "$failed" >&2; exit 12; }
exit 0
