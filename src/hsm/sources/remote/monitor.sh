#!/usr/bin/env bash
# monitor.sh WRAPPER: one per host and sweep, on one long-lived channel. It looks at the watched
# task folders every 5 ms (with builtins only: that starts no process). Reads commands on
# stdin and writes events on stdout, both as NUL-terminated fields:
#   W ID DIR ATTEMPT NONCE PID
#                           watch DIR for ATTEMPT, whose job wrapper is PID ("" when it is
#                           not known: then the pid in DIR/.hsm/launch, if that is ATTEMPT's)
#   U ID                    stop watching
#   L ID SEQ DIR ATTEMPT NONCE SPEC
#                           launch request SEQ (answered by A or E with SEQ):
#                           write DIR/.hsm/launch ("ATTEMPT NONCE": the record that the
#                           host got this launch) and DIR/.hsm/spec (printf %b escapes),
#                           start the wrapper detached (its own session), record its pid
#                           in the launch record ("ATTEMPT NONCE PID"), watch it
#   P ID                    answered with "P ID" after the next scan (a barrier)
# Events:
#   S ID BYTES ALIVE        the status file changed: BYTES are its contents (the blanks
#                           around them cut), ALIVE is 1 or 0 when the wrapper's pid is known
#                           and runs or not, "" when it is not known
#   V ID TEXT               the events log of a live wrapper has new event lines (all of it)
#   R ID LINE               a watched folder has no status: its launch record ("" for none),
#                           at the first scan and whenever it changes
#   A SEQ PID               launched;  E SEQ MESSAGE  not launched
#   P ID                    the barrier
# The monitor never reads a status: hsm.jobscript parses it, in Python. The pid is checked
# before the file is read, so a wrapper that is gone has written its last status whole. While
# the wrapper lives, a change is reported once it is about 50 ms old (a short task only
# reports its end), or at once at a barrier. Once the wrapper is gone and its last status is
# reported, the folder is no longer watched. The monitor ends when its stdin closes; the
# tasks it started do not.
shopt -s extglob
w=$1
dirs=() att=() non=() pid=() last=() age=() evs=() rec=() cmd=() pongs=()
ev() { printf '%s\0' "$@"; }
forget() {
  unset 'dirs[$1]' 'att[$1]' 'non[$1]' 'pid[$1]' 'last[$1]' 'age[$1]' 'evs[$1]' 'rec[$1]'
}
record() { # f = the fields of the launch record of folder $1, l = the record ("" for none)
  f=()
  { read -r -a f <"${dirs[$1]}/.hsm/launch"; } 2>/dev/null
  l=${f[*]}
}
scan() {
  local i k d force=${#pongs[@]}
  for i in "${!dirs[@]}"; do
    d=${dirs[i]} l=-
    if [[ -z ${pid[i]} ]]; then # the pid from this attempt's launch record, once there
      record "$i"
      [[ ${f[0]-} == "${att[i]}" && ${f[1]-} == "${non[i]}" && ${f[2]-} == +([0-9]) ]] &&
        pid[i]=${f[2]}
    fi
    alive=
    if [[ -n ${pid[i]} ]]; then
      alive=0
      kill -0 "${pid[i]}" 2>/dev/null && alive=1
    fi
    s=
    { IFS=$' \n' read -r -d '' s <"$d/status.json"; } 2>/dev/null
    if [[ -z $s ]]; then # no status yet: report the launch record when it changes
      [[ $l != - ]] || record "$i"
      [[ ${rec[i]+set} && ${rec[i]} == "$l" ]] || { rec[i]=$l; ev R "$i" "$l"; }
      continue
    fi
    if [[ $alive != 0 ]]; then # new event lines of a live wrapper (the last ones come with its end)
      e=
      { IFS= read -r -d '' e <"$d/.hsm/events.log"; } 2>/dev/null
      if [[ $e != "${evs[i]-}" && $e == *$'\n'[!#]* ]]; then
        evs[i]=$e
        ev V "$i" "$e"
      fi
    fi
    k=$alive$s
    if [[ ${last[i]-} == "$k" ]]; then age[i]=0; continue; fi
    [[ $alive != 0 ]] && ((!force && ++age[i] < 10)) && continue
    last[i]=$k age[i]=0
    ev S "$i" "$s" "$alive"
    [[ $alive == 0 ]] && forget "$i"
  done
  for k in "${pongs[@]}"; do ev P "$k"; done
  pongs=()
}
launch() { # ID SEQ DIR ATTEMPT NONCE SPEC
  # (The temp folders too: one mkdir here saves the wrapper one.)
  if mkdir -p -- "$3/.hsm" "$3/tmp" "$3/cuda_cache" 2>/dev/null &&
    printf '%s %s\n' "$4" "$5" 2>/dev/null >"$3/.hsm/launch" &&
    printf '%b' "$6" 2>/dev/null >"$3/.hsm/spec"; then
    (cd / && exec setsid bash "$w" "$3" </dev/null >/dev/null 2>&1) &
    forget "$1"
    dirs[$1]=$3 att[$1]=$4 non[$1]=$5 pid[$1]=$!
    { printf '%s %s %s\n' "$4" "$5" "$!" >"$3/.hsm/launch"; } 2>/dev/null
    ev A "$2" "$!"
  else
    ev E "$2" "cannot write the task spec in $3 (disk full or not writable?)"
  fi
}
run() {
  case ${cmd[0]} in
    W)
      forget "${cmd[1]}"
      dirs[cmd[1]]=${cmd[2]} att[cmd[1]]=${cmd[3]} non[cmd[1]]=${cmd[4]}
      [[ ${cmd[5]} == +([0-9]) ]] && pid[cmd[1]]=${cmd[5]} || pid[cmd[1]]=
      ;;
    U) forget "${cmd[1]}" ;;
    L) [[ ${cmd[2]} == +([0-9]) ]] && launch "${cmd[@]:1}" ;;
    P) pongs+=("${cmd[1]}") ;;
  esac
}
# A read with a timeout can lose a NUL delimiter when the timeout fires (bash 5.2), which
# shifts every later field: poll with "read -t 0", then read whole fields with blocking reads.
# The 5 ms pause is a timed read on a pipe that never has data (a builtin: no process).
exec {nap}<> <(:)
while :; do
  if read -t 0; then
    IFS= read -r -d '' part || exit 0
    cmd+=("$part")
    case ${cmd[0]} in L) n=7 ;; W) n=6 ;; U | P) n=2 ;; *) n=1 cmd=() ;; esac
    ((${#cmd[@]} < n)) && continue
    [[ ${cmd[1]} == +([0-9]) ]] && run
    cmd=()
    continue
  fi
  scan
  read -r -t 0.005 -u "$nap" _
done
