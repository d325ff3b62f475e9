#!/bin/bash
@HEADER@
# @NAME@, written by hsm. Element i runs the job wrapper in task folder i below;
# the wrapper records the status, the logs and task_info.txt in that folder.
hsm_root=@ROOT@
hsm_wrapper=@WRAPPER@
hsm_tasks=(@TASKS@)
hsm_i=@INDEX@
if [[ ! $hsm_i =~ ^[0-9]+$ ]] || ((hsm_i < 1 || hsm_i > ${#hsm_tasks[@]})); then
  printf 'hsm: array index %q is not within 1..%d\n' "$hsm_i" "${#hsm_tasks[@]}" >&2
  exit 2
fi
hsm_dir=$hsm_root/${hsm_tasks[hsm_i - 1]}
exec >>"$hsm_dir/.hsm/job.log" 2>&1 </dev/null
printf 'hsm: %s element %s on %s\n' "@JOB_ID@" "$hsm_i" "${HOSTNAME:-unknown}"
@MODULES@
@TIMER@
exec bash "$hsm_wrapper" "$hsm_dir"
