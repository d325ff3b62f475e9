#!/usr/bin/env bash
# snapshot_state.sh CODE LATEST: exit 0 if the sweep's snapshot CODE is complete (pushed by an
# earlier run of the sweep); else print the folder LATEST points to, if it is one.
[[ -e "$1.done" ]] && exit 0
[[ -d "$2/" ]] && printf '%s' "$(readlink -f -- "$2")"
exit 1
