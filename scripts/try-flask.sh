#!/usr/bin/env bash
# Builds the seed's Flask example into an OCI image and runs it the way
# Cloud Run would: its own read-only root file system, its user (65532), its
# env and command as PID 1, PORT=8080, published on 127.0.0.1:8080 from its
# own network namespace. Ctrl-C stops it (SIGTERM is forwarded).
# With CHECK=1 it checks the container contract instead and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bwrap >/dev/null || ! command -v python3 >/dev/null || ! command -v slirp4netns >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq bubblewrap python3 slirp4netns >/dev/null
fi
cargo build --release --locked -q
mode=()
[ "${CHECK:-}" = 1 ] && mode=(--check)
exec ./target/release/slimpack run examples/flask --probe /health --port "${PORT:-8080}" "${mode[@]}"
