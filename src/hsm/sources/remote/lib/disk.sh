# shellcheck shell=bash
# The "--df" section of a probe: the disk of the root folder ($1, as configured), found from
# the nearest folder that exists (the root may not exist yet). Builtins except df.
# shellcheck source=lib/expand_root.sh
. lib/expand_root.sh
while [[ ! -e $r && $r == /?* ]]; do r=${r%/*}; r=${r:-/}; done
printf '%s\n' '--df'; df -P -B1 -- "$r" | { read -r _; read -r line; printf '%s\n' "$line"; }
