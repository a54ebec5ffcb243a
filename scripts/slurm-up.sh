#!/usr/bin/env bash
# A throwaway single-node Slurm cluster (munged + slurmctld + slurmd, no systemd) with fake GPUs,
# for trying and testing `dbsweep run --backend slurm` on one machine. Debian 12 / Slurm 22.05.
#
#   scripts/slurm-up.sh STATE_DIR      install the packages if missing (apt-get), start the daemons
#                                      (nothing to do if already up with the same settings), wait
#                                      until the node is idle, print `export SLURM_CONF=...`
#   scripts/slurm-down.sh STATE_DIR    cancel the jobs and stop the daemons this script started
#
# Everything (configuration, munge key and socket, state, spool, logs, PID files, the fake GPU
# device files, the job completion file `log/jobcomp.txt`) lives under STATE_DIR, e.g.
# target/slurm. Clients need SLURM_CONF: eval "$(scripts/slurm-up.sh target/slurm)".
# Runs as root (slurmd launches jobs as their users). Running it twice is safe.
#
# Settings (environment): SLURM_FAKE_GPUS (4), SLURM_NODE_CPUS (8; may exceed the real cores),
# SLURMCTLD_PORT (16817), SLURMD_PORT (16818). The ports differ from Slurm's defaults so that a
# real Slurm on the same machine is left alone.
set -euo pipefail

usage() { echo "usage: $0 STATE_DIR" >&2; exit 2; }
[[ $# -eq 1 && -n $1 ]] || usage

log() { printf '[slurm-up %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (slurmd and munged manage job processes and keys)"

mkdir -p "$1"
DIR=$(cd "$1" && pwd -P)
NGPUS=${SLURM_FAKE_GPUS:-4}
NCPUS=${SLURM_NODE_CPUS:-8}
CTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
CONF=$DIR/etc/slurm.conf
MSOCK=$DIR/munge/munge.socket
export SLURM_CONF=$CONF
[[ $NGPUS =~ ^[1-9][0-9]*$ && $NCPUS =~ ^[1-9][0-9]*$ ]] || die "SLURM_FAKE_GPUS and SLURM_NODE_CPUS must be positive integers"
(( ${#MSOCK} < 100 )) || die "state dir path too long for a Unix socket: $MSOCK"

# shellcheck source=scripts/slurm-down.sh
source "$(dirname "${BASH_SOURCE[0]}")/slurm-down.sh" --functions-only

install_pkgs() {
  local missing=()
  for tool in slurmctld slurmd sbatch squeue sacct scancel munged; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null ||
    die "missing ${missing[*]} and no apt-get: install Slurm (slurmctld, slurmd, client) and munge"
  log "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2 ||
    die "apt-get install slurmctld slurmd slurm-client munge failed"
}

write_conf() {  # write_conf FOLDER
  local d=$1 mem
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$d"
  cat >"$d/slurm.conf" <<EOF
ClusterName=dbsweep
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MSOCK
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=10
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$NCPUS RealMemory=$mem Gres=gpu:$NGPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  # Slurm 22.05 drops GPUs without a device file, and a regular file gives jobs an empty
  # CUDA_VISIBLE_DEVICES: each fake GPU is a character device (a copy of /dev/null).
  printf 'AutoDetect=off\nName=gpu File=%s\n' "$DIR/dev/nvidia[0-$((NGPUS - 1))]" >"$d/gres.conf"
}

healthy() {
  alive "$DIR/run/munged.pid" "$MSOCK" && alive "$DIR/run/slurmctld.pid" "$CONF" &&
    alive "$DIR/run/slurmd.pid" "$CONF" &&
    [[ $(timeout 10 sinfo -h -N -n localhost -o %T 2>/dev/null) =~ ^(idle|mixed|allocated)$ ]]
}

show_logs() {
  tail -n 20 "$DIR/log/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 2>/dev/null || true
}

up() {
  local t0=$SECONDS tmp st=""
  install_pkgs
  tmp=$(mktemp -d)
  write_conf "$tmp"
  if healthy && cmp -s "$tmp/slurm.conf" "$CONF" && cmp -s "$tmp/gres.conf" "$DIR/etc/gres.conf"; then
    rm -rf "$tmp"
    log "already up"
    return 0
  fi
  stop_all
  # Start from clean state: no jobs or node state from an earlier cluster.
  rm -rf "${DIR:?}"/{etc,state,spool,log,run,dev,munge}
  mkdir -p "$DIR"/{etc,state,spool,log,run,dev,munge}
  chmod 755 "$DIR" "$DIR/munge"  # munged wants the socket folder readable by all
  mv "$tmp"/*.conf "$DIR/etc/"
  rm -rf "$tmp"
  for ((i = 0; i < NGPUS; i++)); do  # char device 1,3 is /dev/null; a symlink where mknod is not allowed
    mknod "$DIR/dev/nvidia$i" c 1 3 2>/dev/null || ln -s /dev/null "$DIR/dev/nvidia$i"
  done

  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge/munge.key"
  munged --force --socket="$MSOCK" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
    --seed-file="$DIR/munge/munged.seed" --log-file="$DIR/log/munged.log" || { show_logs; die "munged did not start"; }
  munge -S "$MSOCK" -n | unmunge -S "$MSOCK" >/dev/null || { show_logs; die "munge self-test failed"; }

  slurmctld -f "$CONF" || { show_logs; die "slurmctld did not start"; }
  for _ in $(seq 1 100); do
    timeout 5 scontrol ping 2>/dev/null | grep -q UP && break
    sleep 0.1
  done
  alive "$DIR/run/slurmctld.pid" "$CONF" ||
    { show_logs; die "slurmctld exited (port $CTLD_PORT in use? set SLURMCTLD_PORT)"; }
  slurmd -f "$CONF" -N localhost || { show_logs; die "slurmd did not start"; }

  for _ in $(seq 1 300); do
    st=$(timeout 10 sinfo -h -N -n localhost -o %T 2>/dev/null || true)
    [[ $st == idle ]] && break
    sleep 0.2
  done
  if [[ $st != idle ]]; then
    timeout 10 scontrol show node localhost >&2 || true
    show_logs
    die "node not idle after 60 s (state '$st'; port $SLURMD_PORT in use? set SLURMD_PORT)"
  fi
  log "up in $((SECONDS - t0)) s: $(sinfo -h -N -o '%N %T cpus=%c gres=%G')"
}

up
echo "export SLURM_CONF=$CONF"
