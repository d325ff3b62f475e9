#!/bin/bash
#SBATCH --job-name=hsm-20260101-120000-ab12-17
#SBATCH --array=1-3%2
#SBATCH --output=/dev/null
#SBATCH --no-requeue
#SBATCH --time=1-02:03:04
#SBATCH --signal=B:USR1@90
#SBATCH --cpus-per-task=8
#SBATCH --mem=16384M
#SBATCH --gres=gpu:a100:2
#SBATCH --partition=gpu
#SBATCH --qos=high
#SBATCH --account=proj42
#SBATCH --constraint=ib
#SBATCH --exclusive
# hsm-20260101-120000-ab12-17, written by hsm. Element i runs the job wrapper in task folder i below;
# the wrapper records the status, the logs and task_info.txt in that folder.
hsm_root='/scratch/it'"'"'s a "dir"
$(touch /tmp/hsm-canary) `id`;x
#SBATCH --qos=evil
#PBS -q evil/sweeps/s1/cluster'
hsm_wrapper='/scratch/it'"'"'s a "dir"
$(touch /tmp/hsm-canary)/.hsm/wrapper-0123.sh'
hsm_tasks=(task_0001 task_0007 task_0042)
hsm_i=${SLURM_ARRAY_TASK_ID:-}
if [[ ! $hsm_i =~ ^[0-9]+$ ]] || ((hsm_i < 1 || hsm_i > ${#hsm_tasks[@]})); then
  printf 'hsm: array index %q is not within 1..%d\n' "$hsm_i" "${#hsm_tasks[@]}" >&2
  exit 2
fi
hsm_dir=$hsm_root/${hsm_tasks[hsm_i - 1]}
exec >>"$hsm_dir/.hsm/job.log" 2>&1 </dev/null
printf 'hsm: %s element %s on %s\n' "${SLURM_ARRAY_JOB_ID:-}_${SLURM_ARRAY_TASK_ID:-} (job ${SLURM_JOB_ID:-})" "$hsm_i" "${HOSTNAME:-unknown}"
if ! type module >/dev/null 2>&1; then
  for hsm_init in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh \
      /usr/share/lmod/lmod/init/bash /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [[ -r $hsm_init ]]; then . "$hsm_init"; break; fi
  done
fi
module load cuda/12.1 || { echo 'hsm: module load cuda/12.1 failed' >&2; exit 3; }
module load python/3.11 gcc/12 || { echo 'hsm: module load python/3.11 gcc/12 failed' >&2; exit 3; }
exec bash "$hsm_wrapper" "$hsm_dir"
