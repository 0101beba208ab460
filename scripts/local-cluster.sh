#!/usr/bin/env bash
# A one-machine Slurm cluster with accounting, and an MLflow tracking server on a real database, for
# the cluster tests (and for trying the Slurm launcher on a laptop):
#   bash scripts/local-cluster.sh start    # installs what is missing (Debian), starts what is not running
#   bash scripts/local-cluster.sh status
#   bash scripts/local-cluster.sh stop     # stops only what `start` started, cancels only this cluster's jobs
# MariaDB serves both Slurm's accounting (slurmdbd supports no other database; submitit reads job
# states with sacct) and MLflow's backend store (mysql+pymysql://). Daemons start directly, with no
# systemd and no cgroups. It runs as root, or as a user with sudo.
#
# Safe on a machine that is not a throwaway:
# - its state lives in a folder of the invoking user ($FMNIST_CLUSTER_DIR, default /var/tmp/fmnist-cluster-<user>),
#   created by that user and refused if it is a link or belongs to someone else;
# - the database passwords are made per cluster and kept in <folder>/secrets (mode 0600); the MLflow
#   server reads its database URI from the environment, not its command line (which `ps` shows);
# - Slurm configs that this script did not write are left alone: it stops with a sentence, unless
#   FMNIST_CLUSTER_REPLACE_CONFIG=1 (the old file is kept as <name>.before-fmnist);
# - `stop` ends the processes whose PIDs `start` recorded, and cancels jobs only on a cluster it started.
# `start` writes <folder>/env (mode 0600) with FMNIST_MLFLOW_SERVER, the server's URL, and FMNIST_OPTUNA_STORAGE, a
# database on the same MariaDB for searches' Optuna studies.
set -euo pipefail
cd "$(dirname "$0")/.."
user=$(id -un)
dir=${FMNIST_CLUSTER_DIR:-/var/tmp/fmnist-cluster-$user}
port=${FMNIST_MLFLOW_PORT:-5055}
python=${PYTHON:-$PWD/.venv/bin/python}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
MARK="# written by fmnist scripts/local-cluster.sh"

log() { echo "local-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up within ${seconds} s; logs in $dir"
  return 1
}

state_folder() {
  # Created by the invoking user: a name someone else planted (a link, a folder of theirs) is refused.
  if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then
    mkdir -m 0711 "$dir" || die "cannot create $dir; set FMNIST_CLUSTER_DIR to a folder of yours"
  fi
  [ -L "$dir" ] && die "$dir is a symbolic link; remove it or set FMNIST_CLUSTER_DIR to a folder of yours"
  [ -d "$dir" ] || die "$dir is not a folder; set FMNIST_CLUSTER_DIR to a folder of yours"
  [ "$(stat -c %U "$dir")" = "$user" ] || die "$dir belongs to $(stat -c %U "$dir"), not $user; set FMNIST_CLUSTER_DIR to a folder of yours"
  case "$(stat -c %A "$dir")" in ?????w????|????????w?) die "$dir can be written by others; chmod go-w it or choose another folder" ;; esac
  chmod 0711 "$dir"  # the database's own user has to pass through to its data folder
}

secrets() {
  if [ ! -s "$dir/secrets" ]; then
    (umask 077 && printf 'SLURM_DB_PASS=%s\nMLFLOW_DB_PASS=%s\n' "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" \
      "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$dir/secrets")
  fi
  chmod 0600 "$dir/secrets"
  # shellcheck disable=SC1091
  . "$dir/secrets"
}

started() { echo "$1" >>"$dir/started"; }  # what `stop` may end

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "cannot install ${missing[*]}: no apt-get here"
  log "installing ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_munge() {
  if munge -n >/dev/null 2>&1; then return 0; fi  # a munged already serves this machine: use it, leave it alone
  [ -s /etc/munge/munge.key ] || $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  $sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
  $sudo chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
  $sudo chmod 0400 /etc/munge/munge.key
  $sudo runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged munge -n
  pgrep -n -x munged >"$dir/munged.pid"
  started munge
}

db=$dir/db  # MariaDB's own folder, owned by its user
sql() { $sudo mariadb --socket="$db/mysql.sock" -u root "$@"; }

start_database() {
  if ! sql -e "select 1" >/dev/null 2>&1; then
    $sudo mkdir -p "$db" && $sudo chown mysql:mysql "$db" && $sudo chmod 0700 "$db"
    if ! $sudo test -d "$db/data/mysql"; then
      $sudo mariadb-install-db --user=mysql --datadir="$db/data" --auth-root-authentication-method=socket >"$dir/mariadb-install.log" 2>&1
    fi
    (cd / && $sudo setsid mariadbd --user=mysql --datadir="$db/data" --socket="$db/mysql.sock" --port=3306 \
      --bind-address=127.0.0.1 --pid-file="$db/mariadb.pid" --log-error="$db/mariadb.log" >/dev/null 2>&1 &)
    started mariadb
    wait_for 60 MariaDB sql -e "select 1"
  fi
  local host
  for host in localhost 127.0.0.1; do
    sql <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE DATABASE IF NOT EXISTS mlflow;
CREATE DATABASE IF NOT EXISTS optuna;
CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY '$SLURM_DB_PASS';
ALTER USER 'slurm'@'$host' IDENTIFIED BY '$SLURM_DB_PASS';
CREATE USER IF NOT EXISTS 'mlflow'@'$host' IDENTIFIED BY '$MLFLOW_DB_PASS';
ALTER USER 'mlflow'@'$host' IDENTIFIED BY '$MLFLOW_DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$host';
GRANT ALL ON mlflow.* TO 'mlflow'@'$host';
GRANT ALL ON optuna.* TO 'mlflow'@'$host';
SQL
  done
  sql -e "FLUSH PRIVILEGES"
}

place_config() {  # place_config NAME MODE: install $dir/NAME as /etc/slurm/NAME unless a foreign one is there
  local target=/etc/slurm/$1
  if $sudo test -e "$target" && ! $sudo grep -qF "$MARK" "$target"; then
    [ "${FMNIST_CLUSTER_REPLACE_CONFIG:-0}" = 1 ] || die "$target exists and was not written by this script: this machine may belong to a real Slurm cluster. Stop here, or set FMNIST_CLUSTER_REPLACE_CONFIG=1 to replace it (it is kept as $target.before-fmnist)"
    $sudo cp -p "$target" "$target.before-fmnist"
    log "replaced $target (the old one is $target.before-fmnist)"
  fi
  ${sudo:-command} install -m "$2" -o "$user" "$dir/$1" "$target"  # slurmdbd wants its config owned by SlurmUser
  rm -f "$dir/$1"
}

write_configs() {
  local node
  node=$(slurmd -C | head -1)
  $sudo mkdir -p /etc/slurm
  mkdir -p "$dir/spool/ctld" "$dir/spool/d"
  (umask 077 && cat >"$dir/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=$user
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$SLURM_DB_PASS
LogFile=$dir/slurmdbd.log
PidFile=$dir/slurmdbd.pid
EOF
  )
  place_config slurmdbd.conf 600
  cat >"$dir/slurm.conf" <<EOF
$MARK
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
  place_config slurm.conf 644
}

running() { [ -f "$dir/$1.pid" ] && $sudo kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

start_slurm() {
  write_configs
  running slurmdbd || { $sudo slurmdbd; started slurmdbd; }
  wait_for 30 slurmdbd timeout 5 sacctmgr -n list cluster
  sacctmgr -i -n list cluster fmnist | grep -q fmnist || $sudo sacctmgr -i add cluster fmnist >/dev/null
  running slurmctld || { $sudo slurmctld; started slurmctld; }
  wait_for 30 slurmctld scontrol ping
  running slurmd || { $sudo slurmd; started slurmd; }
  wait_for 30 "the Slurm node" bash -c "sinfo -h -o %T | grep -Eq 'idle|mix|alloc'"
  wait_for 60 srun srun -N1 -t 1 true
}

start_mlflow() {
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then return 0; fi
  "$python" -c "import pymysql" 2>/dev/null || "$python" -m pip install --quiet pymysql
  mkdir -p "$dir/mlflow-artifacts"
  # The database URI (with its password) goes in through the environment: `ps` shows command lines to everyone.
  (export MLFLOW_BACKEND_STORE_URI="mysql+pymysql://mlflow:$MLFLOW_DB_PASS@127.0.0.1:3306/mlflow"
   setsid "$(dirname "$python")/mlflow" server --host 127.0.0.1 --port "$port" --workers 2 \
     --artifacts-destination "$dir/mlflow-artifacts" >"$dir/mlflow.log" 2>&1 & echo $! >"$dir/mlflow.pid")
  started mlflow
  wait_for 180 "mlflow server" curl -fsS "http://127.0.0.1:$port/health"
}

start() {
  state_folder
  secrets
  install_packages
  start_munge
  start_database
  start_slurm
  start_mlflow
  # The env file holds the Optuna database's URL with its password: readable by the invoking user only.
  (umask 077 && printf 'FMNIST_MLFLOW_SERVER=http://127.0.0.1:%s\nFMNIST_OPTUNA_STORAGE=mysql+pymysql://mlflow:%s@127.0.0.1:3306/optuna\n' \
    "$port" "$MLFLOW_DB_PASS" >"$dir/env")
  log "up: Slurm partition debug ($(sinfo -h -o '%c CPUs, %m MB' | head -1)); MLflow at http://127.0.0.1:$port on MariaDB; state in $dir"
}

end_pid() {  # end_pid PIDFILE [GROUP]: end the process (or its group) recorded there, if it is still alive
  $sudo test -f "$1" || return 0  # MariaDB's pid file lies in its own 0700 folder: read it as root
  local pid
  pid=$($sudo cat "$1")
  if [ "${2:-}" = group ]; then $sudo kill -- -"$pid" 2>/dev/null || true; fi
  $sudo kill "$pid" 2>/dev/null || true
}

stop() {
  if [ ! -d "$dir" ] || [ -L "$dir" ] || [ "$(stat -c %U "$dir")" != "$user" ]; then
    log "nothing to stop: no cluster state of $user in $dir"
    return 0
  fi
  local ours
  ours=$(cat "$dir/started" 2>/dev/null || true)
  if grep -qx slurmctld <<<"$ours" && command -v scancel >/dev/null; then
    scancel --full --quiet --user="$user" 2>/dev/null || true  # the controller is the one `start` started: its jobs only
  fi
  grep -qx mlflow <<<"$ours" && end_pid "$dir/mlflow.pid" group
  for daemon in slurmd slurmctld slurmdbd; do grep -qx "$daemon" <<<"$ours" && end_pid "$dir/$daemon.pid"; done
  grep -qx mariadb <<<"$ours" && end_pid "$db/mariadb.pid"
  grep -qx munge <<<"$ours" && end_pid "$dir/munged.pid"
  rm -f "$dir/env" "$dir/started" "$dir/mlflow.pid" "$dir/munged.pid"
  log "stopped what start had started: ${ours//$'\n'/ }"
}

status() {
  local name
  for name in slurmdbd slurmctld slurmd mlflow; do
    printf '%-10s %s\n' "$name" "$(running "$name" && echo running || echo stopped)"
  done
  printf '%-10s %s\n' mariadb "$(sql -e 'select 1' >/dev/null 2>&1 && echo running || echo stopped)"
  printf '%-10s %s\n' munge "$(munge -n >/dev/null 2>&1 && echo running || echo stopped)"
  printf '%-10s %s\n' server "$(curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null || echo stopped)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
