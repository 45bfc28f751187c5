#!/usr/bin/env bash
# A study on a SLURM cluster: one array task per worker, every task the same worker command; each
# takes runs no other worker has taken and pushes them (docs/cluster.md). Submit from a clone
# whose HEAD is pushed, with the pipeline's data pushed to the DVC remote:
#
#   sbatch --array=1-8 --export=ALL,REPOSITORY=git@github.com:OWNER/REPO.git docs/cluster/slurm-study.sh "$(git rev-parse HEAD)" [STUDY...]
#
# Needs on every node: Python 3.11+, git access with push rights to REPOSITORY (e.g. the cluster
# user's SSH key), write access to the DVC remote (.dvc/config's default; its credentials in the
# environment or in `dvc remote modify --local`), and a node-local scratch folder ($TMPDIR).
# Then, anywhere: python -m pipeline study --collect-from origin --commit <commit> [STUDY...]
#
# Preempted or requeued (`scontrol requeue`), a task gets SIGTERM: its worker gives its claim back at
# once, then stops its run within the grace below (--signal for the time limit); the task starts
# again in a fresh clone, its log appended to the same file. Each run trains with the task's CPUs.
#SBATCH --job-name=mnist-study
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=08:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=study-%A-%a.out
set -euo pipefail
commit="$1"
shift
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
clone="$(mktemp -d "${TMPDIR:-/tmp}/study-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}-XXXXXX")"  # one per start
echo "study task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}, start $((${SLURM_RESTART_COUNT:-0} + 1)), in $clone"
git clone --quiet "$REPOSITORY" "$clone"
cd "$clone"
git checkout --quiet "$commit"
if [ -z "${VIRTUAL_ENV:-}" ]; then  # else the cluster's environment, active at sbatch (--export=ALL), serves
  python3 -m venv .venv && . .venv/bin/activate && pip install -q -r requirements.lock -e .
fi
dvc pull --quiet
# exec: the worker takes the shell's place, so a preemption's SIGTERM reaches it and it hands its run back
exec env STUDY_WORKER="slurm-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}" python -m pipeline study --worker origin --commit "$commit" "$@"
