#!/usr/bin/env bash
# cancel.sh [DIR ATTEMPT NONCE PID PGID]...: SIGTERM to the job wrapper of each attempt (it stops
# its task's process group and records "cancelled"), then wait for them to end; whatever still
# runs after 6 s gets SIGKILL, wrapper and process group (PGID, "" when not known). With PID
# "", the pid in DIR/.hsm/launch, if that is this attempt's. A pid is signalled only while it
# is the job wrapper of DIR (its last argument; checked where there is a /proc).
shopt -s extglob
is_wrapper() {
  local a=()
  [[ -d /proc/self ]] || { kill -0 "$1" 2>/dev/null; return; }
  { mapfile -d '' a <"/proc/$1/cmdline"; } 2>/dev/null || return 1
  ((${#a[@]} >= 2)) && [[ ${a[-1]} == "$2" ]]
}
pids=() groups=()
while (($# >= 5)); do
  d=$1 at=$2 n=$3 p=$4 g=$5
  shift 5
  if [[ -z $p ]]; then
    f=()
    { read -r -a f <"$d/.hsm/launch"; } 2>/dev/null
    [[ ${f[0]-} == "$at" && ${f[1]-} == "$n" ]] && p=${f[2]-}
  fi
  [[ $p == +([0-9]) ]] && is_wrapper "$p" "$d" || continue
  pids+=("$p")
  [[ $g == +([0-9]) ]] && groups+=("$g")
  kill -TERM "$p" 2>/dev/null
done
for _ in $(seq 60); do
  left=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
  ((left)) || exit 0
  sleep 0.1
done
for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
exit 0
