#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for testing `expctl sweep --emit slurm` end to end (needs root and
# Debian's munge, slurmctld, slurmd and slurm-client, which scripts/install-deps.sh installs).
#
#   scripts/slurm-local.sh start DIR    # config, state and logs in DIR; prints the SLURM_CONF to export
#   SLURM_CONF=DIR/slurm.conf sbatch --wait job.sh
#   scripts/slurm-local.sh stop DIR
#
# The daemons listen on ports 16817/16818 (not Slurm's defaults, so a real cluster's daemons are left alone).
set -euo pipefail

cmd=${1:?usage: slurm-local.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm-local.sh start|stop DIR}")
export SLURM_CONF=$dir/slurm.conf

stop() {
  for d in slurmd slurmctld munged; do
    if [ -f "$dir/$d.pid" ]; then
      kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
      rm -f "$dir/$d.pid"
    fi
  done
}

case "$cmd" in
  stop)
    stop
    ;;
  start)
    [ "$(id -u)" -eq 0 ] || { echo "slurm-local: needs root (slurmd runs jobs as their user)" >&2; exit 1; }
    for b in munged slurmctld slurmd sbatch sinfo; do
      command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] ||
        { echo "slurm-local: $b is missing (apt-get install munge slurmctld slurmd slurm-client)" >&2; exit 1; }
    done
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    host=$(hostname -s)
    cat > "$SLURM_CONF" <<EOF
ClusterName=expctl-local
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    stop
    # munge: our own socket and key, so nothing outside DIR is touched.
    [ -f "$dir/munge/munge.key" ] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 700 "$dir/munge"
    chmod 400 "$dir/munge/munge.key"
    PATH=/usr/sbin:$PATH munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
      --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed"
    PATH=/usr/sbin:$PATH slurmctld
    PATH=/usr/sbin:$PATH slurmd
    for _ in $(seq 1 50); do
      if sinfo -h -o '%T' 2>/dev/null | grep -q idle; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
      fi
      sleep 0.2
    done
    echo "slurm-local: the node did not come up; logs in $dir" >&2
    tail -n 20 "$dir"/*.log >&2 || true
    stop
    exit 1
    ;;
  *)
    echo "usage: slurm-local.sh start|stop DIR" >&2
    exit 2
    ;;
esac
