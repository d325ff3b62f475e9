"""The bash programs hsm runs on an SSH host.

Each is a constant script run as ``bash -c SCRIPT NAME ARG...``: values from the config,
the sweep or the user only ever arrive as positional arguments or on stdin, never in the
script text. They need bash >= 4.4 and coreutils, like the job wrapper.
"""

from __future__ import annotations

from hsm.sources.hostpath import EXPAND_ROOT

# Exit 11: the folder cannot be created or written. $1 is the folder.
_WRITABLE = r"""
writable() {
  local err t=$1/.hsm-write-test.$$
  if ! err=$(mkdir -p -- "$1" 2>&1); then printf '%s\n' "$err" >&2; exit 11; fi
  if ! { : >"$t"; } 2>/dev/null; then printf 'cannot create files in %s\n' "$1" >&2; exit 11; fi
  rm -f -- "$t"
}
"""

# Runs the setup lines ($@) like the job wrapper does; strict: the first failure ends it.
_SETUP = r"""
n=0
for line; do
  n=$((n + 1))
  eval "$line" </dev/null >/dev/null || {
    printf 'setup line %d failed (exit %d): %s\n' "$n" "$?" "$line" >&2; exit 13; }
done
"""

# PREFLIGHT ROOT PROJECT PYTHON SETUP...: is the root writable, is python there?
# (Before the code is pushed; setup lines that fail here are only reported.)
PREFLIGHT = (
    EXPAND_ROOT
    + _WRITABLE
    + r"""
writable "$r"
py=$3; cd -- "$r/$2/code" 2>/dev/null || cd
shift 3
failed=
for line; do eval "$line" </dev/null >/dev/null 2>&1 || failed=$line; done
command -v -- "$py" >/dev/null 2>&1 || {
  [[ -z $failed ]] || printf 'a setup line failed: %s\n' "$failed" >&2; exit 12; }
exit 0
"""
)

# SETUP_HOST ROOT PROJECT SWEEP SOURCE WRAPPER_NAME < wrapper text
# Creates the folders, installs the wrapper once; prints "$HOME\0ROOT\0".
SETUP_HOST = (
    EXPAND_ROOT
    + _WRITABLE
    + r"""
b=$r/$2
writable "$b/code"
writable "$b/sweeps/$3/$4"
writable "$r/.hsm"
w=$r/.hsm/$5
if [[ -s $w ]]; then cat >/dev/null; else cat >"$w.$$" && mv -f -- "$w.$$" "$w" || exit 11; fi
printf '%s\0%s\0' "$HOME" "$r"
"""
)

# CHECK CODE_DIR PYTHON COMMAND SCRIPT GPUS SETUP...: after the code push, in the code
# folder and after the setup lines (as a task would): python, the command or script, GPUs.
CHECK = (
    r"""
cd -- "$1" || exit 11
py=$2 cmd=$3 script=$4 gpus=$5
shift 5
"""
    + _SETUP
    + r"""
command -v -- "$py" >/dev/null 2>&1 || exit 12
[[ -z $cmd ]] || command -v -- "$cmd" >/dev/null 2>&1 || exit 14
[[ -z $script || -f $script ]] || exit 15
if ((gpus)); then
  out=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>&1) || {
    printf '%s\n' "$out" >&2; exit 16; }
  printf '%s\n' "$out"
fi
exit 0
"""
)

# MONITOR WRAPPER: one per host and sweep, on one long-lived channel. It looks at the watched
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
MONITOR = r"""
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
"""

# CANCEL [DIR ATTEMPT NONCE PID PGID]...: SIGTERM to the job wrapper of each attempt (it stops
# its task's process group and records "cancelled"), then wait for them to end; whatever still
# runs after 6 s gets SIGKILL, wrapper and process group (PGID, "" when not known). With PID
# "", the pid in DIR/.hsm/launch, if that is this attempt's. A pid is signalled only while it
# is the job wrapper of DIR (its last argument; checked where there is a /proc).
CANCEL = r"""
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
"""

# CLEAN SWEEP_DIR SOURCE_DIR: remove this source's folder of the sweep, then the sweep
# folder if nothing else (another source on a shared file system) is left in it.
CLEAN = r"""
rm -rf -- "$2" && { rmdir -- "$1" 2>/dev/null; true; }
"""


def printf_escape(data: bytes) -> str:
    """``data`` as an argument of bash's ``printf %b`` (which writes it back byte for byte,
    NUL bytes included): printable ASCII stays, everything else becomes ``\\xHH``."""
    out = []
    for byte in data:
        if 0x20 <= byte < 0x7F and byte != 0x5C:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


# PULLER: one per host and sweep, on one long-lived channel. Each request on stdin is
# "PARENT\0ARG\0...\0\0" (the tar arguments: excludes, "--", folder names); the answer on
# stdout is the tar archive of those folders under PARENT, in 512-byte blocks with nothing
# after its end, then "HSMPULL" and tar's exit status in three digits and a newline.
PULLER = r"""
while IFS= read -r -d '' p; do
  args=()
  while IFS= read -r -d '' a && [[ -n $a ]]; do args+=("$a"); done
  tar -C "$p" -b1 -cf - --anchored --no-wildcards "${args[@]}"
  printf 'HSMPULL%03d\n' "$?"
done
"""
