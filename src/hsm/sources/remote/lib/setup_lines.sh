# shellcheck shell=bash
# Runs the setup lines ($@) like the job wrapper does; strict: the first failure ends it
# (exit 13).
n=0
for line; do
  n=$((n + 1))
  eval "$line" </dev/null >/dev/null || {
    printf 'setup line %d failed (exit %d): %s\n' "$n" "$?" "$line" >&2; exit 13; }
done
