"""The bash programs hsm runs on an SSH host.

Each is a constant script run as ``bash -c SCRIPT NAME ARG...``: values from the config,
the sweep or the user only ever arrive as positional arguments or on stdin, never in the
script text. They need bash >= 4.4 and coreutils, like the job wrapper.
"""

from __future__ import annotations

# Sets r to the absolute remote root ($1 as configured: "~", "~/x", "/x" or "x").
_ROOT = r"""
case $1 in
  '~') r=$HOME ;;
  '~/'*) r=$HOME/${1#'~/'} ;;
  /*) r=$1 ;;
  *) r=$HOME/$1 ;;
esac
while [[ $r == ?*/ ]]; do r=${r%/}; done
"""

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
    _ROOT
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
    _ROOT
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

# look DIR: s = the status in the status file (the JSON, without its padding; "" if there is
# none yet, or if it is not a whole status: the wrapper writes a status over the last one in
# place, and a read may catch it half done), alive = 1 if its wrapper pid runs. A status that
# says running with a dead pid is read again: the wrapper may just have written its final
# status and exited. (Builtins only, and cheap: the monitor looks every few milliseconds.)
_LOOK = r"""
shopt -s extglob
status_glob='{"version": +([0-9]), "attempt": +([0-9]), ?("nonce": "*([0-9a-f])", )'
status_glob+='"status": "@(running|completed|failed|cancelled)", "cause": @(null|"+([a-z_])"), '
status_glob+='"exit_code": @(null|?(-)+([0-9])), "pid": +([0-9]), "pgid": @(null|+([0-9])), '
status_glob+='"host": "*([A-Za-z0-9._-])", "started": +([0-9.]), "finished": @(null|+([0-9.]))}'
read_status() {
  s=
  [[ -f $1/status.json ]] && IFS= read -r -d '' s <"$1/status.json" 2>/dev/null
  s=${s%%\}*}\}
  [[ $s == $status_glob ]] || s=
}
look() {
  local pid
  alive=0
  read_status "$1"
  [[ -n $s ]] || return 0
  pid=${s#*\"pid\": } pid=${pid%%,*}
  if kill -0 "$pid" 2>/dev/null; then
    alive=1
  elif [[ $s == *'"status": "running"'* ]]; then
    read_status "$1"
  fi
}
"""

# MONITOR WRAPPER: one per host and sweep, on one long-lived channel. It reads the watched
# status files every 5 ms (with builtins only: that starts no process). Reads commands on
# stdin and writes events on stdout, both as NUL-terminated fields:
#   W ID DIR ATTEMPT        watch DIR for ATTEMPT
#   U ID                    stop watching
#   L ID DIR ATTEMPT NONCE SPEC
#                           write DIR/.hsm/launch ("ATTEMPT NONCE": the record that the
#                           host got this launch) and DIR/.hsm/spec (printf %b escapes),
#                           start the wrapper detached (its own session), watch it
#   P ID                    answered with "P ID" after the next scan (a barrier)
# Events: "S ID STATUS ALIVE" when a watched status changes (a final status of the watched
# attempt ends the watch; a running one is reported once it ran about 50 ms, or at a barrier),
# "V ID TEXT" when the events log of a running task has new event lines (TEXT: all of it),
# "R ID LINE" while a watched folder has no status: its launch record ("ATTEMPT NONCE", or ""
# when there is none), at the first scan and whenever it changes,
# "A ID PID" launched, "E ID MESSAGE" not launched.
# The monitor ends when its stdin closes; the tasks it started do not.
MONITOR = (
    _LOOK
    + r"""
w=$1
dirs=() att=() last=() age=() evs=() rec=() cmd=() pongs=()
ev() { printf '%s\0' "$@"; }
scan() {
  local i k run force=${#pongs[@]}
  for i in "${!dirs[@]}"; do
    look "${dirs[i]}"
    if [[ -z $s ]]; then # no status yet: report the launch record when it changes
      l=
      { IFS= read -r l <"${dirs[i]}/.hsm/launch"; } 2>/dev/null
      [[ ${rec[i]+set} && ${rec[i]} == "$l" ]] || { rec[i]=$l; ev R "$i" "$l"; }
      continue
    fi
    run=0 k=$s
    [[ $s == *'"status": "running"'* ]] && run=1 k=running$alive # a new pgid is no news
    if ((run)); then # new event lines of a running task (the final ones come with it)
      e=
      { IFS= read -r -d '' e <"${dirs[i]}/.hsm/events.log"; } 2>/dev/null
      if [[ $e != "${evs[i]-}" && $e == *$'\n'[!#]* ]]; then
        evs[i]=$e
        ev V "$i" "$e"
      fi
    fi
    if [[ ${last[i]-} == "$k" ]]; then age[i]=0; continue; fi
    # A running attempt is reported after 10 scans, about 50 ms (a short task only reports
    # its end), or at once when a barrier asks for the state of everything.
    ((run && !force && ++age[i] < 10)) && continue
    last[i]=$k age[i]=0
    ev S "$i" "$s" "$alive"
    if [[ $s != *'"status": "running"'* && $s == *"\"attempt\": ${att[i]},"* ]]; then
      unset 'dirs[i]' 'att[i]' 'last[i]' 'age[i]' 'evs[i]' 'rec[i]'
    fi
  done
  for k in "${pongs[@]}"; do ev P "$k"; done
  pongs=()
}
launch() {
  # (The temp folders too: one mkdir here saves the wrapper one.)
  if mkdir -p -- "$2/.hsm" "$2/tmp" "$2/cuda_cache" 2>/dev/null &&
    printf '%s %s\n' "$3" "$4" 2>/dev/null >"$2/.hsm/launch" &&
    printf '%b' "$5" 2>/dev/null >"$2/.hsm/spec"; then
    (cd / && exec setsid bash "$w" "$2" </dev/null >/dev/null 2>&1) &
    dirs[$1]=$2 att[$1]=$3
    unset 'last[$1]' 'evs[$1]' 'rec[$1]'
    ev A "$1" "$!"
  else
    ev E "$1" "cannot write the task spec in $2 (disk full or not writable?)"
  fi
}
run() {
  case ${cmd[0]} in
    W)
      dirs[cmd[1]]=${cmd[2]} att[cmd[1]]=${cmd[3]}
      unset 'last[cmd[1]]' 'evs[cmd[1]]' 'rec[cmd[1]]'
      ;;
    U) unset 'dirs[cmd[1]]' 'att[cmd[1]]' 'last[cmd[1]]' 'evs[cmd[1]]' 'rec[cmd[1]]' ;;
    L) launch "${cmd[1]}" "${cmd[2]}" "${cmd[3]}" "${cmd[4]}" "${cmd[5]}" ;;
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
    case ${cmd[0]} in W) n=4 ;; L) n=6 ;; U | P) n=2 ;; *) n=1 cmd=() ;; esac
    ((${#cmd[@]} < n)) && continue
    [[ ${cmd[1]} == +([0-9]) ]] && run
    cmd=()
    continue
  fi
  scan
  read -r -t 0.005 -u "$nap" _
done
"""
)

# CANCEL DIR ATTEMPT ...: SIGTERM to the wrapper of each running attempt (it stops its task's
# process group and records "cancelled"), then wait for them to end; whatever still runs
# after 6 s gets SIGKILL, process group and wrapper.
CANCEL = (
    _LOOK
    + r"""
pids=() groups=()
for ((i = 1; i < $#; i += 2)); do
  d=${!i} j=$((i + 1)); a=${!j}
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    look "$d"
    [[ -z $s ]] || break
    sleep 0.1
  done
  [[ $s == *"\"attempt\": $a,"* && $s == *'"status": "running"'* ]] || continue
  [[ $s =~ \"pgid\":\ ([0-9]+) ]] && groups+=("${BASH_REMATCH[1]}")
  if [[ $s =~ \"pid\":\ ([0-9]+) ]]; then
    pids+=("${BASH_REMATCH[1]}")
    kill -TERM "${BASH_REMATCH[1]}" 2>/dev/null
  fi
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
)

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
