#!/usr/bin/env bash
# Builds the seed's Flask example into an OCI image and runs it the way a
# container runtime would: its own root file system (read-only), its user
# (65532), its env and command, PORT=8080. Ctrl-C stops it.
# With CHECK=1 it exits after one successful request.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in bwrap umoci curl; do
  if ! command -v "$t" >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq bubblewrap umoci curl >/dev/null
    break
  fi
done
cargo build --release --locked -q
./target/release/slimpack build examples/flask -o oci:target/slimpack/flask.oci
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
umoci unpack --rootless --image target/slimpack/flask.oci:latest "$root/bundle" >/dev/null
port=${PORT:-8080}
# The image's own configuration, read from its config blob.
mapfile -t cmd < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["process"]; print("\n".join(c["args"]))' "$root/bundle/config.json")
mapfile -t env < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["process"]; print("\n".join(e for e in c["env"] if not e.startswith("PORT=")))' "$root/bundle/config.json")
setenv=(); for e in "${env[@]}"; do setenv+=(--setenv "${e%%=*}" "${e#*=}"); done
bwrap --ro-bind "$root/bundle/rootfs" / --proc /proc --dev /dev --tmpfs /tmp \
  --unshare-user --unshare-pid --unshare-ipc --unshare-uts --die-with-parent \
  --uid 65532 --gid 65532 --chdir /app --clearenv "${setenv[@]}" --setenv PORT "$port" \
  -- "${cmd[@]}" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" && break; sleep 0.1; done
echo
echo "serving on http://127.0.0.1:$port (try /health and /)"
if [ "${CHECK:-}" = 1 ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; exit 0; fi
wait "$pid"
