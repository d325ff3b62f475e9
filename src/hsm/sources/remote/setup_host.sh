#!/usr/bin/env bash
# setup_host.sh ROOT PROJECT SWEEP SOURCE WRAPPER_NAME < wrapper text
# Creates the folders, installs the wrapper once; prints "$HOME\0ROOT\0SNAPSHOT\0", where
# SNAPSHOT tells the state of the sweep's code snapshot (ROOT/PROJECT/sweeps/SWEEP/SOURCE/code):
# "done" when it is complete (pushed by an earlier run of the sweep), else "new:" and the
# folder the project's latest snapshot (ROOT/PROJECT/code-latest) points to, if any.
# shellcheck source=lib/expand_root.sh
. lib/expand_root.sh
# shellcheck source=lib/writable.sh
. lib/writable.sh
b=$r/$2
writable "$b/code"
writable "$b/sweeps/$3/$4"
writable "$r/.hsm"
w=$r/.hsm/$5
if [[ -s $w ]]; then cat >/dev/null; else cat >"$w.$$" && mv -f -- "$w.$$" "$w" || exit 11; fi
snapshot=new:
if [[ -e $b/sweeps/$3/$4/code.done ]]; then
  snapshot='done'
elif [[ -d $b/code-latest/ ]]; then
  snapshot=new:$(readlink -f -- "$b/code-latest")
fi
printf '%s\0%s\0%s\0' "$HOME" "$r" "$snapshot"
