#!/usr/bin/env bash
# A real distributed Airflow on this machine, and how a real deployment is put together:
#   PostgreSQL (metadata database) and Redis (Celery broker) from Debian's packages, each its own server
#   with its data under .cluster/; Airflow with the CeleryExecutor: api-server, scheduler, dag-processor,
#   triggerer and two Celery workers with different hostnames, all from this checkout's .venv, with the
#   repository's dags/ folder and the Docker backend.
#
#   bash scripts/cluster.sh up       start everything; returns once the API answers and both workers are registered
#   bash scripts/cluster.sh status   what runs, by PID
#   bash scripts/cluster.sh down     stop exactly what `up` started, by PID
#
# After `up`: `source .cluster/env` points the plain `airflow` CLI at the cluster, and .cluster/admin.json
# holds the REST API's admin credentials ({"username", "password", "url"}). Logs: .cluster/logs/<component>.log.
# No systemd here: daemons are started with their own binaries and stopped by PID.
#
# CLARA_CLUSTER_EXECUTOR=LocalExecutor starts the same Airflow on the same PostgreSQL with the LocalExecutor
# (no Redis, no workers): the baseline that scripts/bench_cluster.py compares the Celery cluster with.
# CLARA_CLUSTER_DAGS replaces the repository's dags/ as the dags folder (the benchmark's own pipelines).
# CLARA_CLUSTER_IDLE_TTL and CLARA_CLUSTER_REAPER_SCHEDULE set the service idle TTL and the reaper's schedule
# (60 s and every minute by default, so the reaper is exercised; a real deployment keeps 3600 s / 5 min).
# CLARA_CLUSTER_DEPLOYMENT_ID sets [clara] deployment_id (clara-local, the same as the demo's: see write_env).
# CLARA_CLUSTER_PRELOAD=0 leaves out $AIRFLOW_HOME/config/airflow_local_settings.py, which preloads clara_airflow
# in the scheduler and the workers before they fork tasks (clara_airflow/preload.py; on by default, as a
# deployment should run; scripts/bench_cluster.py --no-preload measures without it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=$REPO/.cluster
PG_PORT=${CLARA_CLUSTER_PG_PORT:-5433}
REDIS_PORT=${CLARA_CLUSTER_REDIS_PORT:-6380}
API_PORT=${CLARA_CLUSTER_API_PORT:-8090}
EXECUTOR=${CLARA_CLUSTER_EXECUTOR:-CeleryExecutor}
case "$EXECUTOR" in CeleryExecutor|LocalExecutor) ;; *) echo "CLARA_CLUSTER_EXECUTOR: CeleryExecutor or LocalExecutor, not '$EXECUTOR'" >&2; exit 2 ;; esac
COMPONENTS=(api-server scheduler dag-processor triggerer worker-1 worker-2)

log() { printf '\033[1m[cluster]\033[0m %s\n' "$*"; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
  local missing=()
  for pkg in postgresql redis-server; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  CLARA_SKIP_BROWSER=1 bash scripts/setup.sh >/dev/null
  if ! .venv/bin/python -c "import airflow.providers.celery, psycopg2, asyncpg" 2>/dev/null; then
    log "installing the Celery and PostgreSQL extras into .venv"
    .venv/bin/pip install -q --no-build-isolation -c constraints.txt -e ".[cluster]"
  fi
}

write_local_settings() {  # what docs/performance.md tells a deployment to put there
  mkdir -p "$ROOT/airflow/config"
  if [ "${CLARA_CLUSTER_PRELOAD:-1}" = 0 ]; then
    rm -f "$ROOT/airflow/config/airflow_local_settings.py"
    return
  fi
  printf '%s\n' "from clara_airflow.preload import install" "" "install()" >"$ROOT/airflow/config/airflow_local_settings.py"
}

write_env() {
  local db="postgresql+psycopg2://airflow:airflow@127.0.0.1:$PG_PORT/airflow"
  cat >"$ROOT/env" <<EOF
export AIRFLOW_HOME=$ROOT/airflow
export AIRFLOW__CORE__DAGS_FOLDER=${CLARA_CLUSTER_DAGS:-$REPO/dags}
export AIRFLOW__CORE__EXECUTOR=$EXECUTOR
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$API_PORT/execution/
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$db
export AIRFLOW__CELERY__BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0
export AIRFLOW__CELERY__RESULT_BACKEND=db+postgresql+psycopg2://airflow:airflow@127.0.0.1:$PG_PORT/airflow
export AIRFLOW__CELERY__WORKER_CONCURRENCY=${CLARA_CLUSTER_CONCURRENCY:-8}
export AIRFLOW__CORE__PARALLELISM=${CLARA_CLUSTER_PARALLELISM:-16}
export AIRFLOW__API__PORT=$API_PORT
export AIRFLOW__API__BASE_URL=http://127.0.0.1:$API_PORT
export AIRFLOW__API_AUTH__JWT_SECRET=$(cat "$ROOT/secret")
export AIRFLOW__API__SECRET_KEY=$(cat "$ROOT/secret")
# A killed worker's running tasks are failed after 30 s without a heartbeat (default 300 s) and retried
# elsewhere; tasks it had taken from Redis but not started are queued again after 60 s (default 600 s;
# Redis itself would hand them out again only after its visibility timeout, 24 h).
export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=30
export AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=60
export AIRFLOW__CLARA__RETRIES=2
export AIRFLOW__CLARA__RETRY_DELAY=5
export AIRFLOW__CLARA__SERVICE_IDLE_TTL=${CLARA_CLUSTER_IDLE_TTL:-60}
export AIRFLOW__CLARA__REAPER_SCHEDULE='${CLARA_CLUSTER_REAPER_SCHEDULE:-* * * * *}'
export AIRFLOW__CLARA__OUTPUT_ROOT=$ROOT/output
export AIRFLOW__CLARA__PAYLOAD_ROOT=$ROOT/payload
# The same identity as scripts/demo.py's, whatever clone or database: a cluster adopts the demo service that
# an earlier cluster or demo left on this engine (a fresh database would otherwise be a new deployment).
export AIRFLOW__CLARA__DEPLOYMENT_ID=${CLARA_CLUSTER_DEPLOYMENT_ID:-clara-local}
export AIRFLOW__CLARA__SERVICES_DATA_DIR=$ROOT/service-data
export PATH=$REPO/.venv/bin:\$PATH
EOF
}

start_postgres() {
  local bin; bin=$(pg_bin)
  mkdir -p "$ROOT/pg" "$ROOT/run"
  chown postgres:postgres "$ROOT/pg" "$ROOT/run"
  chmod 700 "$ROOT/pg"
  if [ ! -f "$ROOT/pg/PG_VERSION" ]; then
    log "initdb $ROOT/pg"
    runuser -u postgres -- "$bin/initdb" -D "$ROOT/pg" -U postgres --auth=trust >"$ROOT/logs/initdb.log"
  fi
  touch "$ROOT/logs/postgres.log" && chown postgres "$ROOT/logs/postgres.log"
  if runuser -u postgres -- "$bin/pg_ctl" -D "$ROOT/pg" status >/dev/null 2>&1; then
    log "PostgreSQL runs already (restarted with pg_ctl): taking its new PID"
  else
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    runuser -u postgres -- "$bin/pg_ctl" -D "$ROOT/pg" -l "$ROOT/logs/postgres.log" -w start \
      -o "-p $PG_PORT -k $ROOT/run -c listen_addresses=127.0.0.1 -c max_connections=400" >/dev/null
  fi
  head -1 "$ROOT/pg/postmaster.pid" >"$ROOT/pids/postgres.pid"
  local psql=("$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtA)
  if [ -z "$("${psql[@]}" -c "select 1 from pg_roles where rolname='airflow'")" ]; then
    "${psql[@]}" -c "create role airflow login password 'airflow'" -c "create database airflow owner airflow"
  fi
}

start_redis() {
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$ROOT/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$ROOT/redis" --daemonize yes \
    --pidfile "$ROOT/pids/redis.pid" --logfile "$ROOT/logs/redis.log" --save "" --appendonly no
  for _ in $(seq 1 50); do alive "$ROOT/pids/redis.pid" && return; sleep 0.1; done
  echo "redis did not start; see $ROOT/logs/redis.log" >&2; exit 1
}

cluster_env() {  # the cluster's settings only: none of the caller's AIRFLOW_* settings leak in
  local name
  for name in $(compgen -e | grep '^AIRFLOW'); do unset "$name"; done
  source "$ROOT/env"
}

start_component() {  # start_component NAME COMMAND...
  local name=$1; shift
  log "starting $name"
  # setsid: each component leads its own process group, so `down` stops it with its children.
  # Appends: a component restarted by `up` keeps the log of why it stopped.
  (cluster_env; exec setsid "$@" >>"$ROOT/logs/$name.log" 2>&1 </dev/null) &
  echo $! >"$ROOT/pids/$name.pid"
}

up() {
  install
  mkdir -p "$ROOT"/{logs,pids,airflow,output,payload,service-data}
  [ -f "$ROOT/secret" ] || .venv/bin/python -c "import secrets; print(secrets.token_hex(32))" >"$ROOT/secret"
  alive "$ROOT/pids/postgres.pid" || start_postgres
  [ "$EXECUTOR" = LocalExecutor ] || alive "$ROOT/pids/redis.pid" || start_redis
  write_env
  write_local_settings
  log "migrating the metadata database"
  (cluster_env; airflow db migrate >"$ROOT/logs/db-migrate.log" 2>&1)
  alive "$ROOT/pids/api-server.pid" || start_component api-server airflow api-server
  alive "$ROOT/pids/scheduler.pid" || start_component scheduler airflow scheduler
  alive "$ROOT/pids/dag-processor.pid" || start_component dag-processor airflow dag-processor
  alive "$ROOT/pids/triggerer.pid" || start_component triggerer airflow triggerer
  local n
  # Each worker serves its task logs on a port of its own. Gossip and mingle (workers exchanging state and
  # revoked ids at start) serve nothing Airflow uses and cost broker traffic and CPU: docs/performance.md.
  [ "$EXECUTOR" = LocalExecutor ] || for n in 1 2; do
    alive "$ROOT/pids/worker-$n.pid" || start_component "worker-$n" \
      env AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$((8793 + n)) airflow celery worker --celery-hostname "worker-$n@%h" \
      --without-gossip --without-mingle
  done
  log "waiting for the API on :$API_PORT$([ "$EXECUTOR" = LocalExecutor ] || echo ' and two registered workers')"
  (cluster_env; .venv/bin/python scripts/cluster_wait.py "$ROOT")
  status
}

status() {
  local name
  for name in postgres redis "${COMPONENTS[@]}"; do
    if alive "$ROOT/pids/$name.pid"; then
      printf '%-14s running  pid %s\n' "$name" "$(cat "$ROOT/pids/$name.pid")"
    else
      printf '%-14s stopped\n' "$name"
    fi
  done
}

stop_group() {  # stop_group NAME: TERM the component's process group, KILL after 30 s
  local file=$ROOT/pids/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

down() {
  local name
  for name in worker-2 worker-1 triggerer dag-processor scheduler api-server; do stop_group "$name"; done
  if alive "$ROOT/pids/redis.pid"; then
    kill -TERM "$(cat "$ROOT/pids/redis.pid")"
    for _ in $(seq 1 50); do alive "$ROOT/pids/redis.pid" || break; sleep 0.1; done
  fi
  rm -f "$ROOT/pids/redis.pid"
  if [ -f "$ROOT/pg/postmaster.pid" ]; then
    runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$ROOT/pg" -m fast -w stop >/dev/null
  fi
  rm -f "$ROOT/pids/postgres.pid"
  status
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bash scripts/cluster.sh up|down|status" >&2; exit 2 ;;
esac
