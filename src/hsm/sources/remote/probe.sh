#!/usr/bin/env bash
# probe.sh ROOT: an SSH host's health in one round trip: the disk of ROOT, then load, cores
# and memory. Builtins except df and nproc.
# shellcheck source=lib/disk.sh
. lib/disk.sh
printf '%s\n' '--load'; read -r load </proc/loadavg; printf '%s\n' "$load"
printf '%s\n' '--cores'; nproc
printf '%s\n' '--mem'; mapfile -t mem </proc/meminfo; printf '%s\n' "${mem[@]}"
