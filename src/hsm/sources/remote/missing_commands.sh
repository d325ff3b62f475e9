#!/usr/bin/env bash
# missing_commands.sh COMMAND...: prints each command that is not on the PATH, one a line.
for c in "$@"; do command -v "$c" >/dev/null 2>&1 || printf '%s\n' "$c"; done
true
