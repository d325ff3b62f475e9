#!/usr/bin/env bash
# puller.sh: one per host and sweep, on one long-lived channel. Each request on stdin is
# "PARENT\0ARG\0...\0\0" (the tar arguments: excludes, "--", folder names); the answer on
# stdout is the tar archive of those folders under PARENT, in 512-byte blocks with nothing
# after its end, then "HSMPULL" and tar's exit status in three digits and a newline.
while IFS= read -r -d '' p; do
  args=()
  while IFS= read -r -d '' a && [[ -n $a ]]; do args+=("$a"); done
  tar -C "$p" -b1 -cf - --anchored --no-wildcards "${args[@]}"
  printf 'HSMPULL%03d\n' "$?"
done
