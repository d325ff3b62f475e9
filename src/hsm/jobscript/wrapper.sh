#!/usr/bin/env bash
# hsm job wrapper: runs one task of a sweep on any host (bash >= 4.4 and coreutils only).
#
#   bash wrapper.sh TASK_DIR
#
# Reads TASK_DIR/.hsm/spec (NUL-terminated fields, written by hsm.jobscript.encode_spec),
# checks the free disk space, runs the task in its own process group with private temp
# folders, watches the disk while it runs, and records the outcome in TASK_DIR/status.json
# and TASK_DIR/task_info.txt. The contract is described in docs/architecture.md,
# "The job wrapper contract". No value from the spec is ever evaluated by a shell, except
# the setup lines, which are shell lines from the project config by design.
#
# Speed matters (thousands of short tasks): the common path uses shell builtins only, plus
# one `df`, and `mkdir` if the temp folders are missing.

hsm_die() {
  printf 'hsm wrapper: %s\n' "$1" >&2
  exit 2
}

# ---------------------------------------------------------------- stopping the task
# The traps come first, so that a signal that comes while the wrapper reads its spec stops
# the task as soon as it starts (hsm_pgid is still empty), instead of ending the wrapper
# without a status.
hsm_pgid=''
hsm_running=0 # 1 while the task may be running
hsm_stop_cause=''
hsm_killer=''
# shellcheck disable=SC2329 # a trap handler
hsm_stop() { # trap handler: stop the task (cause $1)
  # A process forked from the wrapper (the task before its exec, the watcher) runs this
  # handler if the signal came before it reset its traps: it just ends.
  [[ $BASHPID == "$$" ]] || exit 143
  ((hsm_running)) || [[ -z $hsm_pgid ]] || return 0 # the task is over: nothing to stop
  [[ -z $hsm_stop_cause ]] || return 0
  hsm_stop_cause=$1
  [[ -n $hsm_pgid ]] && hsm_kill_task
}
hsm_kill_task() { # SIGTERM to the task's process group now, SIGKILL after the grace time
  [[ -z $hsm_killer ]] || return 0
  kill -TERM -- "-$hsm_pgid" 2>/dev/null
  set -m
  (
    sleep "$hsm_grace"
    kill -KILL -- "-$hsm_pgid"
  ) </dev/null >/dev/null 2>&1 &
  hsm_killer=$!
  set +m
}
# shellcheck disable=SC2329 # a trap handler
hsm_pass() { # trap handler: pass the checkpoint signal $1 on to the task's process group
  [[ $BASHPID == "$$" ]] || return 0 # the task before its exec: it gets it once it runs
  [[ $1 == "${hsm_signal-}" ]] && ((hsm_running)) && [[ -n $hsm_pgid ]] || return 0
  kill -"$1" -- "-$hsm_pgid" 2>/dev/null
  hsm_now_epoch
  hsm_date "${hsm_t%.*}"
  hsm_info_append "Signal $1 passed to the task at $hsm_d (a checkpoint before the walltime)"$'\n'
}
trap 'hsm_stop cancelled' TERM INT HUP
trap 'hsm_stop disk_kill' URG # from the disk watcher (USR1 and USR2 are the task's)
trap 'hsm_pass USR1' USR1
trap 'hsm_pass USR2' USR2

(($# == 1)) && [[ -n $1 ]] || hsm_die "usage: bash wrapper.sh TASK_DIR"
hsm_task_dir=$1
[[ $hsm_task_dir == /* ]] || hsm_task_dir=$PWD/$hsm_task_dir
while [[ $hsm_task_dir == ?*/ ]]; do hsm_task_dir=${hsm_task_dir%/}; done
hsm_meta=$hsm_task_dir/.hsm
hsm_status_file=$hsm_task_dir/status.json
hsm_info_file=$hsm_task_dir/task_info.txt
hsm_events_file=$hsm_meta/events.log
hsm_status_size=1024 # status.json is always exactly this many bytes (padded with spaces)
hsm_grace=2          # seconds between SIGTERM and SIGKILL when stopping the task
hsm_days=(Sun Mon Tue Wed Thu Fri Sat)
hsm_months=(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)

# ---------------------------------------------------------------- the spec
[[ -f $hsm_meta/spec ]] || hsm_die "no task spec at $hsm_meta/spec"
mapfile -d '' -t hsm_f <"$hsm_meta/spec" || hsm_die "cannot read $hsm_meta/spec"
hsm_uint='^[0-9]+$'
hsm_bad_spec() { hsm_die "invalid task spec in $hsm_meta/spec: $1"; }
[[ ${hsm_f[0]-} == hsm-spec-3 ]] || hsm_bad_spec "unknown format"
((${#hsm_f[@]} >= 14)) || hsm_bad_spec "too few fields"
for hsm_i in 1 5 6 7 8 9; do
  [[ ${hsm_f[hsm_i]} =~ $hsm_uint ]] || hsm_bad_spec "field $hsm_i is not a number"
done
[[ ${hsm_f[2]} =~ ^[0-9a-f]{0,32}$ ]] || hsm_bad_spec "field 2 is not a nonce"
[[ ${hsm_f[3]} =~ ^(USR1|USR2)?$ ]] || hsm_bad_spec "field 3 is not a signal"
hsm_attempt=$((10#${hsm_f[1]}))
hsm_nonce=${hsm_f[2]}
hsm_signal=${hsm_f[3]}
hsm_project_dir=${hsm_f[4]}
hsm_project_min=$((10#${hsm_f[5]}))
hsm_task_min=$((10#${hsm_f[6]}))
hsm_interval=$((10#${hsm_f[7]}))
hsm_warn_below=$((10#${hsm_f[8]}))
hsm_kill_below=$((10#${hsm_f[9]}))
hsm_i=10
hsm_take() { # hsm_take NAME: the next counted group of fields into the array NAME
  local n=${hsm_f[hsm_i]-}
  [[ $n =~ $hsm_uint ]] || hsm_bad_spec "field $hsm_i is not a count"
  n=$((10#$n))
  ((hsm_i + 1 + n < ${#hsm_f[@]})) || hsm_bad_spec "too few fields"
  eval "$1"'=("${hsm_f[@]:hsm_i+1:n}")'
  hsm_i=$((hsm_i + 1 + n))
}
hsm_env=() hsm_setup=() hsm_argv=()
hsm_take hsm_env
hsm_take hsm_setup
hsm_take hsm_argv
((hsm_i + 1 == ${#hsm_f[@]})) || hsm_bad_spec "unexpected number of fields"
((${#hsm_argv[@]} > 0)) || hsm_bad_spec "empty command"
hsm_info=${hsm_f[hsm_i]}
unset hsm_f

# ---------------------------------------------------------------- helpers
hsm_host=${HOSTNAME:-unknown}
hsm_host=${hsm_host//[^A-Za-z0-9._-]/_}
hsm_now_epoch() { # sets hsm_t to the current time in epoch seconds (with a fraction)
  if [[ -n ${EPOCHREALTIME-} ]]; then
    hsm_t=${EPOCHREALTIME/,/.}
  else
    printf -v hsm_t '%(%s)T' -1
  fi
}
hsm_date() { # sets hsm_d to the time $1 (epoch seconds) like `date`: Mon Jan  1 12:00:00 2024
  local s
  printf -v s '%(%w %m %e %H:%M:%S %Y)T' "$1"
  hsm_d="${hsm_days[${s:0:1}]} ${hsm_months[10#${s:2:2} - 1]} ${s:5}"
}
hsm_gb2() { # sets hsm_g to bytes $1 in GB (10^9) with two decimals
  local c=$((($1 + 5000000) / 10000000))
  printf -v hsm_g '%d.%02d' $((c / 100)) $((c % 100))
}
hsm_gb1() { # sets hsm_g to bytes $1 in GB (10^9) with one decimal
  local c=$((($1 + 50000000) / 100000000))
  printf -v hsm_g '%d.%d' $((c / 10)) $((c % 10))
}

# hsm_df PATH...: free and total bytes of each path with one `df` call, into the arrays
# hsm_avail and hsm_total (an empty entry when unknown).
hsm_df() {
  local out line rest n=0
  hsm_avail=() hsm_total=()
  out=$(exec df -P -B1 -- "$@" 2>/dev/null)
  rest=${out#*$'\n'}$'\n'
  [[ $out == *$'\n'* ]] || rest=
  while [[ -n $rest ]]; do
    line=${rest%%$'\n'*}
    rest=${rest#*$'\n'}
    [[ -n $line ]] || continue
    if [[ $line =~ [[:space:]]([0-9]+)[[:space:]]+[0-9]+[[:space:]]+([0-9]+)[[:space:]]+[0-9]+%[[:space:]] ]]; then
      hsm_total[n]=${BASH_REMATCH[1]}
      hsm_avail[n]=${BASH_REMATCH[2]}
    else
      hsm_total[n]='' hsm_avail[n]=''
    fi
    n=$((n + 1))
  done
  if ((n != $# && $# > 1)); then # df failed for one path: ask for each path alone
    local p a=() t=()
    for p in "$@"; do
      hsm_df "$p"
      a+=("${hsm_avail[0]-}") t+=("${hsm_total[0]-}")
    done
    hsm_avail=("${a[@]}") hsm_total=("${t[@]}")
  fi
}

# hsm_write_status STATE CAUSE EXIT_CODE FINISHED (JSON tokens for the last three).
# Every status has the same size, so a status is written over the previous one in place, in
# one write: that needs no new block (it works on a full disk) and starts no process. A
# reader that catches the write half done sees text that is not a valid status, and reads
# again (the first status of a task is new: until it is written, readers see nothing or
# partial JSON). If that fails (a status file cut short on a full disk), a temporary file
# is renamed over it, or else the spare file reserved in .hsm (same fixed size).
hsm_write_status() {
  local body pad
  printf -v body '{"version": 2, "attempt": %d, "nonce": "%s", "status": "%s", "cause": %s, "exit_code": %s, "pid": %d, "pgid": %s, "host": "%s", "started": %s, "finished": %s}' \
    "$hsm_attempt" "$hsm_nonce" "$1" "$2" "$3" "$$" "${hsm_pgid:-null}" "$hsm_host" "$hsm_started" "$4"
  printf -v pad '%*s' $((hsm_status_size - 1 - ${#body})) ''
  body+=$pad$'\n'
  if [[ -f $hsm_status_file ]]; then
    { printf '%s' "$body" 1<>"$hsm_status_file"; } 2>/dev/null && return 0
  else
    { printf '%s' "$body" >"$hsm_status_file"; } 2>/dev/null && return 0
  fi
  { printf '%s' "$body" >"$hsm_meta/status.tmp" && mv -f -- "$hsm_meta/status.tmp" "$hsm_status_file"; } 2>/dev/null && return 0
  if [[ -f $hsm_meta/status.spare ]]; then
    { printf '%s' "$body" 1<>"$hsm_meta/status.spare" && mv -f -- "$hsm_meta/status.spare" "$hsm_status_file"; } 2>/dev/null && return 0
  fi
  printf 'hsm wrapper: cannot write %s\n' "$hsm_status_file" >&2
  return 1
}

hsm_info_append() { # append text to task_info.txt; ignored when the disk is full
  { printf '%s' "$1" >>"$hsm_info_file"; } 2>/dev/null
}


hsm_group_alive() { # is a process of the task's group still running (not a zombie)?
  kill -0 -- "-$hsm_pgid" 2>/dev/null || return 1
  [[ -r /proc/self/stat ]] || return 0
  local f line state
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    line=${line##*) } # after the command name: state ppid pgrp ...
    state=${line%% *}
    line=${line#* }
    line=${line#* }
    [[ $state != [ZX] && ${line%% *} == "$hsm_pgid" ]] && return 0
  done
  return 1
}

# ---------------------------------------------------------------- start
hsm_now_epoch
hsm_started=$hsm_t
hsm_start_s=${hsm_t%.*}
# Reserve space for a full disk: one status file, and a first block of the events log (a
# comment line), so that status updates and event lines still fit when no block is left.
[[ -f $hsm_meta/status.spare ]] || { printf '%*s\n' $((hsm_status_size - 1)) '' >"$hsm_meta/status.spare"; } 2>/dev/null
# The events of this attempt follow its own comment line.
{
  [[ -f $hsm_events_file ]] || printf '# hsm events, one per line\n'
  printf '# attempt %d\n' "$hsm_attempt"
} 2>/dev/null >>"$hsm_events_file"

hsm_text=''
[[ -s $hsm_info_file ]] && hsm_text+=$'\n============================================================\n'
hsm_text+=$hsm_info
[[ $hsm_text == *$'\n' ]] || hsm_text+=$'\n'
hsm_text+="Host: $hsm_host"$'\n'

# Pre-check of the free disk space.
hsm_df "$hsm_project_dir" "$hsm_task_dir"
hsm_date "$hsm_start_s"
hsm_precheck_ok=1
hsm_j=0
for hsm_path in "$hsm_project_dir" "$hsm_task_dir"; do
  hsm_min=$hsm_project_min
  ((hsm_j == 1)) && hsm_min=$hsm_task_min
  hsm_a=${hsm_avail[hsm_j]-} hsm_tot=${hsm_total[hsm_j]-}
  hsm_j=$((hsm_j + 1))
  hsm_text+="Disk space check for $hsm_path at $hsm_d:"$'\n'
  if [[ -z $hsm_a ]]; then
    hsm_text+=$'  Available: unknown (df failed)\nDisk space check SKIPPED\n'
    continue
  fi
  hsm_gb2 "$hsm_a"
  hsm_x=$hsm_a hsm_y=$hsm_tot
  while ((hsm_y > 1000000000000000)); do hsm_x=$((hsm_x / 1000)) hsm_y=$((hsm_y / 1000)); done
  hsm_p=0
  ((hsm_y > 0)) && hsm_p=$(((hsm_x * 1000 + hsm_y / 2) / hsm_y))
  printf -v hsm_line '  Available: %s GB (%d.%d%% free)\n' "$hsm_g" $((hsm_p / 10)) $((hsm_p % 10))
  hsm_text+=$hsm_line
  if ((hsm_a >= hsm_min)); then
    hsm_text+=$'Disk space check PASSED\n'
  else
    hsm_gb2 "$hsm_min"
    hsm_text+="Disk space check FAILED"$'\n'"  Required: at least $hsm_g GB ($hsm_min bytes) free"$'\n'
    hsm_precheck_ok=0
  fi
done

hsm_finish() { # hsm_finish STATE CAUSE EXIT_CODE LABEL: record the outcome and exit
  local code=$3
  hsm_now_epoch
  hsm_date "${hsm_t%.*}"
  hsm_text+="Finished: $hsm_d"$'\n'
  [[ $code == null ]] || hsm_text+="Exit code: $code"$'\n'
  hsm_text+="Status: $4"$'\n'
  hsm_info_append "$hsm_text"
  hsm_write_status "$1" "\"$2\"" "$code" "$hsm_t"
  [[ $code == null ]] && code=1
  exit "$code"
}

if ((!hsm_precheck_ok)); then
  hsm_finish failed disk_precheck null FAILED_DISK_SPACE
fi
if [[ $hsm_stop_cause == cancelled ]]; then
  hsm_finish cancelled cancelled null CANCELLED
fi

# Private temp folders and the task's environment.
hsm_tmp=$hsm_task_dir/tmp
hsm_cuda=$hsm_task_dir/cuda_cache
[[ -d $hsm_tmp && -d $hsm_cuda ]] || mkdir -p -- "$hsm_tmp" "$hsm_cuda"
hsm_text+=$'Environment variables:\n'
hsm_text+="  TMPDIR=$hsm_tmp"$'\n'"  TMP=$hsm_tmp"$'\n'"  TEMP=$hsm_tmp"$'\n'
hsm_text+="  CUDA_CACHE_PATH=$hsm_cuda"$'\n'
for hsm_key in WANDB_DIR WANDB_RUN_GROUP CUDA_VISIBLE_DEVICES; do
  for hsm_kv in "${hsm_env[@]}"; do
    [[ $hsm_kv == "$hsm_key="* ]] && hsm_text+="  $hsm_kv"$'\n'
  done
done
hsm_now_epoch
hsm_date "${hsm_t%.*}"
hsm_text+="Started: $hsm_d"$'\n'
hsm_info_append "$hsm_text"
hsm_text=''

hsm_eval_setup() { # runs one setup line, with no positional parameters
  eval "$hsm_line"
}
hsm_run_task() { # the task's process: environment, setup lines, then exec of the argv
  set -- "${hsm_argv[@]}"
  cd -- "$hsm_project_dir" || exit 1
  local hsm_kv hsm_n=0 hsm_rc
  for hsm_kv in "${hsm_env[@]}"; do
    [[ $hsm_kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || {
      printf 'hsm: invalid environment entry %q\n' "$hsm_kv" >&2
      exit 1
    }
    # shellcheck disable=SC2163 # exports KEY=VALUE as given, without evaluating VALUE
    export -- "$hsm_kv" || exit 1
  done
  export TMPDIR="$hsm_tmp" TMP="$hsm_tmp" TEMP="$hsm_tmp" CUDA_CACHE_PATH="$hsm_cuda"
  for hsm_line in "${hsm_setup[@]}"; do
    hsm_n=$((hsm_n + 1))
    hsm_eval_setup
    hsm_rc=$?
    if ((hsm_rc != 0)); then
      printf 'hsm: setup line %d failed with exit code %d: %s\n' "$hsm_n" "$hsm_rc" "$hsm_line" >&2
      exit "$hsm_rc"
    fi
  done
  exec -- "$@"
}

# Run the task in its own process group (job control), so that the whole task tree can be
# signalled at once.
hsm_running=1
set -m
hsm_run_task </dev/null >>"$hsm_task_dir/stdout.log" 2>>"$hsm_task_dir/stderr.log" &
hsm_pgid=$!
set +m
hsm_child=$hsm_pgid
# The first status: the task runs, and its process group is known.
hsm_write_status running null null null
[[ -n $hsm_stop_cause ]] && hsm_kill_task # a signal came while the task was starting

# The disk watcher: a background process group of its own, ended with the task.
hsm_watch() {
  local low=0 a i tick=''
  trap - TERM INT HUP URG USR1 USR2
  # A pipe that never delivers anything: `read -t` on it sleeps without starting a process.
  { exec {tick}<> <(:); } 2>/dev/null || tick=''
  while :; do
    if [[ -n $tick ]]; then
      read -r -t "$hsm_interval" -u "$tick" _
      (($? > 128)) || sleep "$hsm_interval"
    else
      sleep "$hsm_interval"
    fi
    kill -0 "$$" 2>/dev/null && kill -0 -- "-$hsm_pgid" 2>/dev/null || exit 0
    hsm_df "$hsm_project_dir" "$hsm_task_dir"
    a=''
    for i in 0 1; do
      [[ -n ${hsm_avail[i]-} ]] && { [[ -z $a ]] || ((hsm_avail[i] < a)); } && a=${hsm_avail[i]}
    done
    [[ -n $a ]] || continue
    if ((a < hsm_warn_below || a < hsm_kill_below)); then
      if ((!low)); then
        low=1
        hsm_gb1 "$a"
        hsm_line="WARNING: Low disk space detected: ${hsm_g}GB remaining"$'\n'
        { printf '%s' "$hsm_line" >>"$hsm_events_file"; } 2>/dev/null
        hsm_info_append "$hsm_line"
      fi
    else
      low=0
    fi
    if ((a < hsm_kill_below)); then
      hsm_gb1 "$a"
      hsm_line="CRITICAL: Disk space exhausted: ${hsm_g}GB remaining"
      hsm_gb1 "$hsm_kill_below"
      hsm_line+=" (limit ${hsm_g}GB), terminating the task"$'\n'
      { printf '%s' "$hsm_line" >>"$hsm_events_file"; } 2>/dev/null
      hsm_info_append "$hsm_line"
      kill -URG "$$"
      exit 0
    fi
  done
}
hsm_watcher=''
if ((hsm_interval > 0 && (hsm_warn_below > 0 || hsm_kill_below > 0))); then
  set -m
  hsm_watch </dev/null >/dev/null 2>&1 &
  hsm_watcher=$!
  set +m
fi

# Wait for the task. A trapped signal interrupts `wait`; then wait again.
while :; do
  { wait "$hsm_child"; } 2>/dev/null
  hsm_rc=$?
  kill -0 "$hsm_child" 2>/dev/null && continue
  { wait "$hsm_child"; } 2>/dev/null # a status collected meanwhile, if any
  hsm_r=$?
  ((hsm_r != 127)) && hsm_rc=$hsm_r
  break
done
hsm_running=0

# Leave nothing behind: the watcher, the killer, and what is left of the task's group.
# The helpers get SIGKILL: a SIGTERM that reaches a helper before it has reset the traps it
# inherited would be taken for the wrapper's own, and the wait below would last until the
# watcher's next check. (Wait only for a helper that was still there: bash's `wait` for a
# helper that ended while a trap ran can block on another job.)
for hsm_helper in $hsm_watcher $hsm_killer; do
  kill -KILL -- "-$hsm_helper" 2>/dev/null && { wait "$hsm_helper"; } 2>/dev/null
done
if hsm_group_alive; then
  kill -TERM -- "-$hsm_pgid" 2>/dev/null
  for ((hsm_i = 0; hsm_i < hsm_grace * 10; hsm_i++)); do
    sleep 0.1
    hsm_group_alive || break
  done
  hsm_group_alive && kill -KILL -- "-$hsm_pgid" 2>/dev/null
fi

case $hsm_stop_cause in
cancelled) hsm_finish cancelled cancelled "$hsm_rc" CANCELLED ;;
disk_kill) hsm_finish failed disk_kill "$hsm_rc" FAILED_DISK_SPACE ;;
esac
if ((hsm_rc == 0)); then
  hsm_finish completed completed 0 COMPLETED
elif ((hsm_rc > 128 && hsm_rc <= 128 + 64)); then
  # A shell reports a death by signal N as 128+N.
  hsm_finish failed signal "$hsm_rc" FAILED
else
  hsm_finish failed task_failed "$hsm_rc" FAILED
fi
