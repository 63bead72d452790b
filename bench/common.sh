# Shared by the benchmark scripts (sourced): timing and JSON helpers, and a
# docker-registry on loopback, stopped with the script.
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.3f}")' "$@"; }
now() { date +%s.%N; }
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }

# start_registry DIR: serves a registry stored in DIR; sets $reg (host:port)
# and $regpid.
start_registry() {
  command -v docker-registry >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; }
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$1/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $1/registry
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$1/registry.yml" >/dev/null 2>&1 &
  regpid=$!
  until (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
  reg=127.0.0.1:$port
}
