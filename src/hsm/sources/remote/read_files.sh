#!/usr/bin/env bash
# read_files.sh PATH...: prints "<path>\0<content>\0" for every path (empty content for a
# missing file).
for f in "$@"; do
  s=""; [ -f "$f" ] && s=$(<"$f")
  printf '%s\0%s\0' "$f" "$s"
done
