#!/usr/bin/env bash
# Stops the single-node Slurm cluster that scripts/slurm-up.sh started under STATE_DIR: cancels
# its jobs, waits for them to end, then stops slurmd, slurmctld and munged by their PID files.
# Logs and the job completion file stay in STATE_DIR. Safe to run when nothing is up.
#
#   scripts/slurm-down.sh STATE_DIR
#
# (slurm-up.sh sources this file with --functions-only for the helpers below; it then sets
# DIR, CONF and MSOCK itself.)
set -euo pipefail

_down_log() { printf '[slurm-down %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }

# alive PIDFILE NEEDLE: the PID in the file is running (not a zombie) and its command line
# contains NEEDLE (so a recycled PID is never mistaken for our daemon).
alive() {
  local pid s
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  s=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [[ -n $s && ${s:0:1} != Z ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# stop_pid PIDFILE NEEDLE: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$1" "$2" || break
    sleep 0.1
  done
  if alive "$1" "$2"; then
    _down_log "pid $pid ignored SIGTERM, sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop_all() {
  if alive "$DIR/run/slurmctld.pid" "$CONF"; then
    local jobs
    jobs=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
      # shellcheck disable=SC2086
      SLURM_CONF=$CONF timeout 10 scancel $jobs 2>/dev/null || true
      for _ in $(seq 1 200); do  # until the jobs (and their slurmstepd) are gone
        [[ -z $(SLURM_CONF=$CONF timeout 10 squeue -h -t R,CG -o %i 2>/dev/null) ]] && break
        sleep 0.1
      done
    fi
  fi
  stop_pid "$DIR/run/slurmd.pid" "$CONF"
  stop_pid "$DIR/run/slurmctld.pid" "$CONF"
  stop_pid "$DIR/run/munged.pid" "$MSOCK"
}

if [[ ${1:-} == --functions-only ]]; then
  return 0
fi

[[ $# -eq 1 && -n $1 ]] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
if [[ ! -d $1 ]]; then
  _down_log "nothing to stop: $1 does not exist"
  exit 0
fi
DIR=$(cd "$1" && pwd -P)
CONF=$DIR/etc/slurm.conf
MSOCK=$DIR/munge/munge.socket
stop_all
_down_log "down ($DIR)"
