#!/usr/bin/env bash
# "A fresh runner, a warm registry cache, a code edit, a push": what
# `--cache` saves a CI runner, against the peer's cold build (the seeds'
# Dockerfile with buildah, which has no registry cache here).
#
#   bench/build-cache.sh                    # examples/fastapi-psycopg2 vs seed003-fastapi
#   bench/build-cache.sh flask              # examples/flask vs seed000-flask
#   RUNS=5 PEER=0 bench/build-cache.sh      # more runs; skip the peer
#
# Machine A (its own empty cache) builds the example with --cache and
# --push to a docker-registry on loopback; for each run a new "runner" (an
# empty cache) builds the example after a one-line edit with the same
# flags and pushes it. Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
case "${1:-fastapi-psycopg2}" in
  flask) example=flask; peer=seed000-flask ;;
  fastapi-psycopg2) example=fastapi-psycopg2; peer=seed003-fastapi ;;
  *) echo "unknown case ${1}: flask or fastapi-psycopg2" >&2; exit 2 ;;
esac
peer_dir=${PEER_DIR:-../shared/peer}
work=$(mktemp -d)
regpid=""
trap '[ -n "$regpid" ] && kill "$regpid" 2>/dev/null; rm -rf "$work"' EXIT
cargo build --release --locked -q
bin=$PWD/target/release/slimpack
. bench/common.sh

start_registry "$work"
export SOURCE_DATE_EPOCH=1700000000

src=$work/$example
cp -r "examples/$example" "$src"
t0=$(now)
SLIMPACK_CACHE=$work/machine-a "$bin" build "$src" --cache "$reg/cache" --push "$reg/app:a" --json > "$work/a.json" 2>/dev/null
t1=$(now)
cold_a=$(echo "$t1 - $t0" | bc)
echo "# a one-line edit" >> "$src/main.py"
times=(); down=(); up=()
for i in $(seq "$RUNS"); do
  t0=$(now)
  SLIMPACK_CACHE=$work/runner-$i "$bin" build "$src" --cache "$reg/cache" --push "$reg/app-$i:edit" --json > "$work/b$i.json" 2>/dev/null
  t1=$(now)
  times+=("$(echo "$t1 - $t0" | bc)")
  down+=("$(json "$work/b$i.json" 'd["build_cache"]["downloaded_bytes"]')")
  up+=("$(json "$work/b$i.json" 'd["push"]["uploaded_bytes"] + d["push"]["manifest_bytes"]')")
done
b=$work/b1.json
image=$(json "$b" 'd["size"]')
layers=$(json "$b" '", ".join(l["name"] + ": " + ("registry" if l.get("from_build_cache") else "cached" if l["cached"] else "built") for l in d["layers"])')
actions=$(json "$b" '", ".join(x["kind"] + " " + x["action"] for x in d["push"]["blobs"])')
runner_bytes=$(du -sb "$work/runner-1" | cut -f1)

peer_cold=""
if [ "${PEER:-1}" != 0 ] && [ -x "$peer_dir/run-peer.sh" ]; then
  echo "building the peer image (buildah)..." >&2
  peer_json=$("$peer_dir/run-peer.sh" "$peer" 2>"$work/peer.err" | tail -1) || peer_json=""
  [ -z "$peer_json" ] || peer_cold=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cold_s"])' "$peer_json")
fi
ours=$(median "${times[@]}")
ratio=$([ -n "$peer_cold" ] && python3 -c "print(f'{$ours/$peer_cold:.4f}')" || echo "n/a")

echo "Machine: $(nproc) cores, $(date -u +%F); slimpack $($bin --version | cut -d' ' -f2); runs: $RUNS"
echo
echo "| examples/$example, fresh runner, warm registry cache, code edit, push | slimpack | peer (cold, no registry cache) | ours/peer |"
echo "|---|---|---|---|"
echo "| time (s, median) | $ours | ${peer_cold:-} | $ratio |"
echo "| bytes downloaded from the cache repository | $(median "${down[@]}" | cut -d. -f1) | | |"
echo "| bytes uploaded (blobs + manifest) | $(median "${up[@]}" | cut -d. -f1) | | |"
echo "| image, compressed | $image | | |"
echo "| the runner's cache directory afterwards | $runner_bytes | | |"
echo "| layers | $layers | | |"
echo "| push | $actions | | |"
echo
echo "raw: runner=(${times[*]}) downloaded=(${down[*]}) uploaded=(${up[*]}) machine-a-cold=$cold_a"
