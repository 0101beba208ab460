#!/usr/bin/env bash
# A one-machine Slurm cluster with accounting, and an MLflow tracking server on a real database:
#   bash scripts/local-cluster.sh start    # installs what is missing (Debian), starts everything, idempotent
#   bash scripts/local-cluster.sh status
#   bash scripts/local-cluster.sh stop     # cancels all jobs, stops the daemons in reverse order
# MariaDB serves both Slurm's accounting (slurmdbd supports no other database; submitit reads job
# states with sacct) and MLflow's backend store (mysql+pymysql://). Daemons start directly, with no
# systemd and no cgroups. Everything lives under $FMNIST_CLUSTER_DIR (default /var/tmp/fmnist-cluster);
# `start` writes $FMNIST_CLUSTER_DIR/env with FMNIST_MLFLOW_SERVER, the server's URL.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${FMNIST_CLUSTER_DIR:-/var/tmp/fmnist-cluster}
port=${FMNIST_MLFLOW_PORT:-5055}
python=${PYTHON:-$PWD/.venv/bin/python}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

log() { echo "local-cluster: $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up within ${seconds} s; logs in $dir"
  return 1
}

install() {
  local missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { log "cannot install ${missing[*]}: no apt-get here"; return 1; }
  log "installing ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_munge() {
  pgrep -x munged >/dev/null && return 0
  [ -s /etc/munge/munge.key ] || $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  $sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
  $sudo chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
  $sudo chmod 0400 /etc/munge/munge.key
  $sudo runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged munge -n
}

db=$dir/db  # MariaDB's own folder, owned by its user
sql() { $sudo mariadb --socket="$db/mysql.sock" -u root "$@"; }

start_database() {
  if ! sql -e "select 1" >/dev/null 2>&1; then
    $sudo mkdir -p "$db" && $sudo chown mysql:mysql "$db"
    if [ ! -d "$db/data/mysql" ]; then
      $sudo mariadb-install-db --user=mysql --datadir="$db/data" --auth-root-authentication-method=socket >"$dir/mariadb-install.log" 2>&1
    fi
    (cd / && $sudo setsid mariadbd --user=mysql --datadir="$db/data" --socket="$db/mysql.sock" --port=3306 \
      --bind-address=127.0.0.1 --pid-file="$db/mariadb.pid" --log-error="$db/mariadb.log" >/dev/null 2>&1 &)
    wait_for 60 MariaDB sql -e "select 1"
  fi
  sql <<'SQL'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE DATABASE IF NOT EXISTS mlflow;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'mlflow'@'localhost' IDENTIFIED BY 'mlflow';
CREATE USER IF NOT EXISTS 'mlflow'@'127.0.0.1' IDENTIFIED BY 'mlflow';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON mlflow.* TO 'mlflow'@'localhost';
GRANT ALL ON mlflow.* TO 'mlflow'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

write_configs() {
  local node user
  node=$(slurmd -C | head -1)
  user=$(id -un)
  $sudo mkdir -p /etc/slurm "$dir/spool/ctld" "$dir/spool/d"
  $sudo tee /etc/slurm/slurmdbd.conf >/dev/null <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=$user
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurm
LogFile=$dir/slurmdbd.log
PidFile=$dir/slurmdbd.pid
EOF
  $sudo chmod 600 /etc/slurm/slurmdbd.conf
  $sudo tee /etc/slurm/slurm.conf >/dev/null <<EOF
ClusterName=fmnist
SlurmctldHost=$(hostname)
SlurmUser=$user
AuthType=auth/munge
# No systemd, no cgroups: track processes by their parents, no task binding, no accounting gathering.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A requeued job starts again within seconds (defaults: 120 s credential expiry, 60 s scheduling pass).
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=2
KillWait=10
ReturnToService=2
MinJobAge=300
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_slurm() {
  write_configs
  pgrep -x slurmdbd >/dev/null || $sudo slurmdbd
  wait_for 30 slurmdbd timeout 5 sacctmgr -n list cluster
  sacctmgr -i -n list cluster fmnist | grep -q fmnist || $sudo sacctmgr -i add cluster fmnist >/dev/null
  pgrep -x slurmctld >/dev/null || $sudo slurmctld
  wait_for 30 slurmctld scontrol ping
  pgrep -x slurmd >/dev/null || $sudo slurmd
  wait_for 30 "the Slurm node" bash -c "sinfo -h -o %T | grep -Eq 'idle|mix|alloc'"
  wait_for 60 srun srun -N1 -t 1 true
}

start_mlflow() {
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then return 0; fi
  "$python" -c "import pymysql" 2>/dev/null || "$python" -m pip install --quiet pymysql
  mkdir -p "$dir/mlflow-artifacts"
  (setsid "$(dirname "$python")/mlflow" server --host 127.0.0.1 --port "$port" --workers 2 \
     --backend-store-uri "mysql+pymysql://mlflow:mlflow@127.0.0.1:3306/mlflow" \
     --artifacts-destination "$dir/mlflow-artifacts" >"$dir/mlflow.log" 2>&1 & echo $! >"$dir/mlflow.pid")
  wait_for 180 "mlflow server" curl -fsS "http://127.0.0.1:$port/health"
}

start() {
  install
  $sudo mkdir -p "$dir"
  start_munge
  start_database
  start_slurm
  start_mlflow
  echo "FMNIST_MLFLOW_SERVER=http://127.0.0.1:$port" >"$dir/env"
  log "up: Slurm partition debug ($(sinfo -h -o '%c CPUs, %m MB' | head -1)); MLflow at http://127.0.0.1:$port on MariaDB"
}

stop() {
  command -v scancel >/dev/null && scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  [ -f "$dir/mlflow.pid" ] && { kill -- -"$(cat "$dir/mlflow.pid")" 2>/dev/null || kill "$(cat "$dir/mlflow.pid")" 2>/dev/null || true; rm -f "$dir/mlflow.pid"; }
  for daemon in slurmd slurmctld slurmdbd; do $sudo pkill -x "$daemon" 2>/dev/null || true; done
  [ -f "$db/mariadb.pid" ] && $sudo kill "$(cat "$db/mariadb.pid")" 2>/dev/null || true
  $sudo pkill -x munged 2>/dev/null || true
  rm -f "$dir/env"
  log "stopped"
}

status() {
  for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
    printf '%-10s %s\n' "$daemon" "$(pgrep -x "$daemon" >/dev/null && echo running || echo stopped)"
  done
  printf '%-10s %s\n' mlflow "$(curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null || echo stopped)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
