#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on 127.0.0.1, for trying the ./slurm profile and for
# tests/test_slurm.py (which starts and stops it around the SLURM integration test).
#
#   bash workflow/scripts/slurm_cluster.sh start STATE_DIR   start munged, slurmctld, slurmd
#   bash workflow/scripts/slurm_cluster.sh stop STATE_DIR    cancel every job, stop those daemons
#
# Needs root and Debian's slurm-wlm and munge packages
# (bash workflow/scripts/install_system_packages.sh slurm-wlm munge).
# Two partitions on the one node: "cpu" (default) and "gpu". The gpu partition has GPU_COUNT
# count-only GPUs (GRES gpu) backed by dummy device files, so `--gpus=N` is scheduled as on a real
# cluster and jobs see CUDA_VISIBLE_DEVICES; programs that probe CUDA find none and use the CPU.
# The node's CPUs and memory are the machine's; DefMemPerCPU lets jobs without --mem share it.
# No accounting daemon: `sacct` does not work, so clients poll with `squeue`, and MinJobAge keeps
# finished jobs visible to squeue for 10 minutes.
#
# Everything lives in STATE_DIR (munge key and socket, spool, logs, pid files) except
# /etc/slurm/slurm.conf and /etc/slurm/gres.conf: SLURM's job steps read the configuration from
# there (the executor plugin's job step drops SLURM_CONF). `start` refuses to replace a
# slurm.conf it did not write and to run beside another slurmctld; `stop` removes both files.
# Environment: SLURM_TEST_CTLD_PORT (6817), SLURM_TEST_SLURMD_PORT (6818), SLURM_TEST_GPUS (2).
set -euo pipefail

MARKER="# written by dannasep workflow/scripts/slurm_cluster.sh"
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

usage() { die "usage: $0 start|stop STATE_DIR"; }

[ $# -eq 2 ] || usage
ACTION=$1
STATE=$(realpath -m "$2")
# SLURM's gres.conf cannot name a path with a space: the configuration names STATE through a
# space-free symbolic link when it has one.
if [[ "$STATE" =~ [[:space:]] ]]; then
  CFG_STATE=/tmp/dannasep-slurm-$(printf %s "$STATE" | sha256sum | cut -c1-16)
else
  CFG_STATE=$STATE
fi

ours() { [ -f "$1" ] && head -n 1 "$1" | grep -qF "$MARKER"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Whether the process whose pid is in file $1 is the program $2 (a pid file can outlive its
# process, and the pid be reused by anything).
pid_is() { pid_alive "$1" && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

# Stop the process whose pid is in file $1 if it is program $2: TERM, then KILL after 10 s.
stop_pidfile() {
  local file=$1 program=$2 pid
  pid_alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  if ! pid_is "$file" "$program"; then
    echo "slurm_cluster.sh: $file names pid $pid, which is not $program; not killing it" >&2
    rm -f "$file"
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

write_config() {
  local node cpus mem gpus=${SLURM_TEST_GPUS:-2} files=""
  node=$(hostname -s)
  # What slurmd finds on this machine, so the node registers as valid.
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n 1)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1)
  [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from 'slurmd -C'"
  # Dummy GPU devices: slurmd drops file-less GPUs, and wants character devices (a regular
  # file also works, with an error in the log, where mknod is not allowed).
  for i in $(seq 0 $((gpus - 1))); do
    mknod "$STATE/gpu$i" c 1 3 2>/dev/null || touch "$STATE/gpu$i"
  done
  mkdir -p /etc/slurm
  cat > "$CONF" <<EOF
$MARKER for the cluster in $STATE
ClusterName=dannasep-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=${SLURM_TEST_CTLD_PORT:-6817}
SlurmdPort=${SLURM_TEST_SLURMD_PORT:-6818}
SlurmUser=root
AuthType=auth/munge
AuthInfo="socket=$CFG_STATE/munge/munge.socket"
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge=600
KillWait=5
ReturnToService=2
StateSaveLocation="$CFG_STATE/ctld"
SlurmdSpoolDir="$CFG_STATE/slurmd"
SlurmctldPidFile="$CFG_STATE/slurmctld.pid"
SlurmdPidFile="$CFG_STATE/slurmd.pid"
SlurmctldLogFile="$CFG_STATE/log/slurmctld.log"
SlurmdLogFile="$CFG_STATE/log/slurmd.log"
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$gpus State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node MaxTime=INFINITE State=UP
EOF
  printf '%s\nNodeName=%s Name=gpu File="%s/gpu[0-%d]"\n' "$MARKER" "$node" "$CFG_STATE" $((gpus - 1)) > "$GRES_CONF"
}

start_munge() {
  # A private munged (own key, socket and pid file), so a system munge is never touched.
  mkdir -p "$STATE/munge"
  chmod 700 "$STATE/munge"
  [ -f "$STATE/munge/munge.key" ] || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$STATE/munge/munge.key"
  munged --force --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
  for _ in $(seq 50); do
    munge -S "$STATE/munge/munge.socket" -n </dev/null | unmunge -S "$STATE/munge/munge.socket" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "munged did not answer; see $STATE/log/munged.log"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (it writes $CONF and runs the SLURM daemons)"
  for cmd in munged slurmctld slurmd sinfo; do
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] ||
      die "$cmd is missing: bash workflow/scripts/install_system_packages.sh slurm-wlm munge"
  done
  if [ -e "$CONF" ] && ! ours "$CONF"; then
    die "$CONF exists and was not written by this script: not replacing a real SLURM configuration"
  fi
  if [ -e "$GRES_CONF" ] && ! ours "$GRES_CONF"; then
    die "$GRES_CONF exists and was not written by this script"
  fi
  if pgrep -x slurmctld >/dev/null; then
    die "a slurmctld is already running (stop it first, or: $0 stop STATE_DIR of the cluster that started it)"
  fi
  mkdir -p "$STATE"/{ctld,slurmd,log}
  [ "$CFG_STATE" = "$STATE" ] || ln -sfn "$STATE" "$CFG_STATE"
  export PATH=$PATH:/usr/sbin
  write_config
  start_munge
  slurmctld -c   # -c: a clean start, no jobs or node state from an earlier cluster
  slurmd
  local node state=""
  node=$(hostname -s)
  for _ in $(seq 300); do
    state=$(sinfo -h -n "$node" -p cpu -o %t 2>/dev/null || true)
    [ "$state" = idle ] && { echo "SLURM cluster up: node $node, partitions cpu and gpu; state in $STATE"; return 0; }
    sleep 0.1
  done
  tail -n 20 "$STATE"/log/slurmctld.log "$STATE"/log/slurmd.log >&2 || true
  die "node $node is '$state', not idle, after 30 s"
}

stop() {
  export PATH=$PATH:/usr/sbin
  # Cancel what is left on this cluster only (its slurmctld, through the slurm.conf this script
  # wrote), and give the job steps a moment to end before slurmd goes.
  if pid_is "$STATE/slurmctld.pid" slurmctld && ours "$CONF"; then
    local jobs
    jobs=$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null || true)
    [ -n "$jobs" ] && SLURM_CONF=$CONF scancel --full --quiet $jobs 2>/dev/null || true
    for _ in $(seq 100); do
      [ -z "$(SLURM_CONF=$CONF squeue -h -t running,completing,pending -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pidfile "$STATE/slurmd.pid" slurmd
  stop_pidfile "$STATE/slurmctld.pid" slurmctld
  stop_pidfile "$STATE/munge/munged.pid" munged
  for f in "$CONF" "$GRES_CONF"; do ours "$f" && rm -f "$f"; done
  [ "$CFG_STATE" = "$STATE" ] || rm -f "$CFG_STATE"
  return 0
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
