#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for trying docs/cluster.md's job array on one machine (the test
# tests/test_slurm.py runs it): munged, slurmctld and slurmd as root, every file under DIR, free ports.
#   bash scripts/slurm/local-cluster.sh up DIR     # then: export SLURM_CONF=DIR/slurm.conf; sinfo; sbatch ...
#   bash scripts/slurm/local-cluster.sh down DIR   # stops the three daemons started by `up DIR`
# The node declares 16 CPUs and 128 GiB whatever the machine has (SlurmdParameters=config_overrides), so the
# docs' `--cpus-per-task=8 --mem=64G` tasks fit two at once; no cgroups, so nothing is enforced. No GPUs:
# GRES cannot be shown here. Needs root and `scripts/setup.sh --with-slurm` (Debian slurmctld, slurmd, munge).
# On failure it prints the failing daemon's log and exits 1.
set -euo pipefail

cmd=${1:?usage: local-cluster.sh up|down DIR}
dir=$(realpath -m "${2:?usage: local-cluster.sh up|down DIR}")

stop() {  # stop the daemon whose pid file is $1 (SIGTERM, then SIGKILL after 20 s)
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

if [ "$cmd" = down ]; then
  # jobs first: slurmd going away leaves their processes running
  if [ -f "$dir/slurm.conf" ] && kill -0 "$(cat "$dir/slurmctld.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
    export SLURM_CONF=$dir/slurm.conf
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 60); do [ -z "$(squeue -h -t running,completing 2>/dev/null)" ] && break; sleep 1; done
  fi
  stop "$dir/slurmd.pid"
  stop "$dir/slurmctld.pid"
  stop "$dir/munged.pid"
  exit 0
fi
[ "$cmd" = up ] || { echo "usage: local-cluster.sh up|down DIR" >&2; exit 2; }

fail() {  # $1: what failed, $2: the log to show
  echo "local-cluster: $1" >&2
  [ -f "$2" ] && tail -n 30 "$2" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (slurmd starts job steps as their user)" /dev/null
for bin in munged slurmctld slurmd; do
  command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] ||
    fail "$bin not installed: run scripts/setup.sh --with-slurm" /dev/null
done
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

mkdir -p "$dir/state" "$dir/spool"
chmod 700 "$dir"
host=$(hostname -s)
conf=$dir/slurm.conf
cat >"$conf" <<CONF
ClusterName=tsqlocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MinJobAge=3600
NodeName=$host NodeAddr=127.0.0.1 CPUs=16 RealMemory=131072 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf

# munge: a key of this cluster's own, its own socket (a system munged, if any, is left alone)
dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge.key"
munged --socket="$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" --force ||
  fail "munged did not start" "$dir/munged.log"

slurmctld -f "$conf" || fail "slurmctld did not start" "$dir/slurmctld.log"
slurmd -f "$conf" || fail "slurmd did not start" "$dir/slurmd.log"
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %T 2>/dev/null || true)
  [ "$state" = idle ] && { echo "local-cluster: up ($host idle); export SLURM_CONF=$conf"; exit 0; }
  for d in slurmctld slurmd; do
    kill -0 "$(cat "$dir/$d.pid" 2>/dev/null || echo 0)" 2>/dev/null || fail "$d exited" "$dir/$d.log"
  done
  sleep 1
done
fail "the node is not idle after 60 s (sinfo: ${state:-no answer})" "$dir/slurmd.log"
