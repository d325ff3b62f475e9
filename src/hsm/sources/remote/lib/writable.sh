# shellcheck shell=bash
# writable DIR: create DIR if needed; exit 11 when it cannot be created or written.
writable() {
  local err t=$1/.hsm-write-test.$$
  if ! err=$(mkdir -p -- "$1" 2>&1); then printf '%s\n' "$err" >&2; exit 11; fi
  if ! { : >"$t"; } 2>/dev/null; then printf 'cannot create files in %s\n' "$1" >&2; exit 11; fi
  rm -f -- "$t"
}
