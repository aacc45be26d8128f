#!/usr/bin/env bash
# Start (or stop) a private Docker engine for tests and offline image builds: Debian's dockerd on its own
# unix socket, data root and exec root, so it never touches a system engine. Prints `export DOCKER_HOST=...`.
#   docker/local-engine.sh start | stop | status
# State lives in $MDPO_DOCKER_STATE (default /tmp/mdpo-dockerd-$UID: a unix socket path must stay short).
set -euo pipefail
STATE="${MDPO_DOCKER_STATE:-/tmp/mdpo-dockerd-$(id -u)}"
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
export DOCKER_HOST="unix://$SOCK"

running() { [ -S "$SOCK" ] && [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install_engine() {
  command -v dockerd >/dev/null && command -v debootstrap >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then echo "dockerd/debootstrap missing and not root: cannot install them" >&2; return 1; fi
  echo "installing Debian's docker.io and debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends docker.io debootstrap >&2
}

case "${1:-start}" in
  start)
    if running; then echo "export DOCKER_HOST=$DOCKER_HOST"; exit 0; fi
    install_engine
    mkdir -p "$STATE/data" "$STATE/exec"
    # No bridge and no iptables rules: training containers run with network_mode=none, builds with --network none.
    setsid dockerd --host "$DOCKER_HOST" --data-root "$STATE/data" --exec-root "$STATE/exec" \
      --pidfile "$PIDFILE" --bridge none --iptables=false --ip-masq=false </dev/null >"$LOG" 2>&1 &
    for _ in $(seq 1 60); do
      if running && DOCKER_API_VERSION= docker --host "$DOCKER_HOST" version >/dev/null 2>&1; then
        echo "export DOCKER_HOST=$DOCKER_HOST"; exit 0
      fi
      sleep 0.5
    done
    echo "dockerd did not come up; last lines of $LOG:" >&2; tail -20 "$LOG" >&2; exit 1 ;;
  stop)
    if running; then kill "$(cat "$PIDFILE")"; for _ in $(seq 1 40); do running || break; sleep 0.25; done; fi ;;
  status)
    if running; then echo "running: DOCKER_HOST=$DOCKER_HOST"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
