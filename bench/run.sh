#!/usr/bin/env bash
# Side-by-side benchmark: slimpack vs the seeds' own multi-stage Dockerfile
# (built by ../shared/peer/run-peer.sh with buildah), in one run.
#
#   bench/run.sh                      # examples/flask vs seed000-flask
#   bench/run.sh fastapi-psycopg2     # examples/fastapi-psycopg2 vs seed003-fastapi
#   bench/run.sh django-poetry        # examples/django-poetry alone (no seed has one)
#   RUNS=5 bench/run.sh               # more repetitions (medians are reported)
#
# Prints a Markdown table for BENCHMARKS.md. Needs what ./test.sh installs,
# plus buildah for the peer (run-peer.sh installs it). Time to ready is
# measured by `slimpack run --check` for both images, the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
probe=/health; main=main.py
case "${1:-flask}" in
  flask) example=flask; peer=seed000-flask; peer_port=8080 ;;
  # seed 003's CMD hard-codes --port 8000 (it ignores $PORT): run it there.
  fastapi-psycopg2) example=fastapi-psycopg2; peer=seed003-fastapi; peer_port=8000 ;;
  django-poetry) example=django-poetry; peer=""; peer_port=8080; probe=/; main=blog/urls.py ;;
  *) echo "unknown case ${1}: flask, fastapi-psycopg2 or django-poetry" >&2; exit 2 ;;
esac
peer_dir=${PEER_DIR:-../shared/peer}
work=$(mktemp -d)
regpid=""
trap '[ -n "$regpid" ] && kill "$regpid" 2>/dev/null; rm -rf "$work"' EXIT
cargo build --release --locked -q
bin=$PWD/target/release/slimpack

. bench/common.sh

# --- peer -------------------------------------------------------------------
peer_json=""
if [ -n "$peer" ] && [ -x "$peer_dir/run-peer.sh" ]; then
  echo "building the peer image (buildah)..." >&2
  peer_json=$(PEER_OUT=$work/peer "$peer_dir/run-peer.sh" "$peer" 2>"$work/peer.err" | tail -1) || peer_json=""
fi
[ -n "$peer_json" ] || [ -z "$peer" ] || echo "peer unavailable (buildah or run-peer.sh failed): reporting ours only" >&2
echo "$peer_json" > "$work/peer.json"

# --- ours -------------------------------------------------------------------
src=$work/$example
cp -r "examples/$example" "$src"
cold=(); rss=()
for i in $(seq "$RUNS"); do
  cache=$work/cache-cold-$i
  t0=$(now)
  SLIMPACK_CACHE=$cache /usr/bin/time -f "%M" -o "$work/rss" "$bin" build "$src" --json -o "oci:$work/ours.oci" > "$work/report.json" 2>/dev/null
  t1=$(now)
  cold+=("$(echo "$t1 - $t0" | bc)"); rss+=("$(cat "$work/rss")")
done
export SLIMPACK_CACHE=$work/cache-cold-1

# A registry on loopback (Debian's docker-registry): what a push after an
# edit sends, and cold starts that pull.
start_registry "$work"
"$bin" push "oci:$work/ours.oci" "$reg/ours:latest" --json > "$work/push0.json"

warm=(); edit=()
for i in $(seq "$((RUNS + 2))"); do
  t0=$(now); "$bin" build "$src" -o "oci:$work/ours.oci" >/dev/null 2>&1; t1=$(now)
  warm+=("$(echo "$t1 - $t0" | bc)")
  echo "# edit $i" >> "$src/$main"
  t0=$(now); "$bin" build "$src" --json -o "oci:$work/ours.oci" > "$work/edit.json" 2>/dev/null; t1=$(now)
  edit+=("$(echo "$t1 - $t0" | bc)")
  [ "$i" -gt 1 ] || "$bin" push "oci:$work/ours.oci" "$reg/ours:latest" --json > "$work/push-edit.json"
done
pushed=$(json "$work/push-edit.json" 'd["uploaded_bytes"] + d["manifest_bytes"]')
unc=$(json "$work/report.json" 'd["uncompressed_size"]')
comp=$(json "$work/report.json" 'd["size"]')
rebuilt=$(json "$work/edit.json" '",".join(l["name"] for l in d["layers"] if not l["cached"])')

# --- time to ready, warm (image already unpacked), both through `slimpack run --check`
ready() {  # IMAGE PROBE CONTAINER_PORT -> ms from process start to the first successful probe
  # --check exits non-zero when any check fails; the time is still reported.
  { "$bin" run "$1" --check --json --probe "$2" --port 8080 --container-port "$3" 2>/dev/null || true; } \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["time_to_ready_ms"])'
}
have_peer=""
[ -n "$peer" ] && [ -d "$work/peer/$peer.oci" ] && have_peer=1
ready "oci:$work/ours.oci" "$probe" 8080 >/dev/null   # unpack once: "warm" means unpacked
[ -z "$have_peer" ] || ready "oci:$work/peer/$peer.oci" "$probe" "$peer_port" >/dev/null
ours_r=(); peer_r=()
for i in $(seq "$((RUNS * 3))"); do
  ours_r+=("$(ready "oci:$work/ours.oci" "$probe" 8080)")
  [ -z "$have_peer" ] || peer_r+=("$(ready "oci:$work/peer/$peer.oci" "$probe" "$peer_port")")
done

# --- time to ready, cold: an empty cache pulls from the loopback registry,
# unpacks, starts, and waits for the first probe (a new instance's cost,
# minus the network). `prepare_ms` is pull + unpack. The cache is in memory
# (/dev/shm), as a Cloud Run instance's file system is: on this VM's disk
# the same unpack took 0.3 to 2 s depending on the writeback and discards
# of earlier runs, which measured the disk, not the image.
shm=/dev/shm; [ -d "$shm" ] && [ -w "$shm" ] || shm=$work
cold_ready() {  # REF PROBE CONTAINER_PORT -> "total prepare+ready"
  local c; c=$(mktemp -d -p "$shm")
  { SLIMPACK_CACHE=$c "$bin" run "$1" --check --json --probe "$2" --port 8080 --container-port "$3" 2>/dev/null || true; } \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["prepare_ms"] + d["time_to_ready_ms"], "%d+%d" % (d["prepare_ms"], d["time_to_ready_ms"]))'
  rm -rf "$c"
}
peer_pushed=""
if [ -n "$have_peer" ]; then
  "$bin" push "oci:$work/peer/$peer.oci" "$reg/peer:latest" --json > "$work/push-peer.json"
  # The peer's edit invalidates the layer that holds the edited file and
  # every layer after it (Docker's layer cache): those, and its config,
  # are what its push after an edit sends.
  peer_pushed=$(python3 - "$work/peer/$peer.oci" "$main" <<'PY'
import gzip, json, sys, tarfile
root, main = sys.argv[1], sys.argv[2]
blob = lambda d: f"{root}/blobs/sha256/{d.split(':')[1]}"
idx = json.load(open(f"{root}/index.json"))
mdesc = idx["manifests"][0]
man = json.load(open(blob(mdesc["digest"])))
cfg = json.load(open(blob(man["config"]["digest"])))
# The edited file as the image holds it: under its working directory.
edited = (cfg["config"].get("WorkingDir") or "/").strip("/") + "/" + main
edited = edited.lstrip("/")
hit = None
for i, layer in enumerate(man["layers"]):
    with tarfile.open(blob(layer["digest"]), "r:*") as t:
        if any(n.lstrip("./") == edited for n in t.getnames()):
            hit = i
            break
sent = sum(l["size"] for l in man["layers"][hit:]) if hit is not None else 0
print(sent + man["config"]["size"] + mdesc["size"])
PY
)
fi
ours_c=(); peer_c=(); ours_cs=(); peer_cs=()
for i in $(seq "$((RUNS + 2))"); do
  read -r t split < <(cold_ready "$reg/ours:latest" "$probe" 8080); ours_c+=("$t"); ours_cs+=("$split")
  if [ -n "$have_peer" ]; then
    read -r t split < <(cold_ready "$reg/peer:latest" "$probe" "$peer_port"); peer_c+=("$t"); peer_cs+=("$split")
  fi
done

# --- report -----------------------------------------------------------------
p() { [ -n "$peer_json" ] && python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$peer_json" "$1" || echo ""; }
ratio() { [ -n "$2" ] && python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.3f}")' "$1" "$2" || echo "n/a"; }
mb() { python3 -c 'import sys; print(f"{int(sys.argv[1])/1e6:.1f} MB")' "$1"; }
pu=$(p uncompressed_bytes); pc=$(p compressed_bytes); pcold=$(p cold_s); pedit=$(p rebuild_s)
oc=$(median "${cold[@]}"); ow=$(median "${warm[@]}"); oe=$(median "${edit[@]}"); orr=$(median "${ours_r[@]}")
pr=""; [ ${#peer_r[@]} -gt 0 ] && pr=$(median "${peer_r[@]}")
oce=$(median "${ours_c[@]}"); pce=""; [ ${#peer_c[@]} -gt 0 ] && pce=$(median "${peer_c[@]}")
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"); $(date -u +%F); slimpack $($bin --version | cut -d' ' -f2); runs: $RUNS"
uvbin=$(ls -d "$SLIMPACK_CACHE"/tools/uv-*/uv 2>/dev/null | head -1); [ -n "$uvbin" ] || uvbin=$(command -v uv || true)
echo "Versions: $(buildah --version 2>/dev/null | cut -d' ' -f1-3 || echo 'buildah: none'); $([ -n "$uvbin" ] && "$uvbin" --version | cut -d' ' -f1-2); $(bwrap --version); docker-registry $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null); slirp4netns $(dpkg-query -W -f='${Version}' slirp4netns 2>/dev/null); $(rustc --version | cut -d' ' -f1-2)"
echo
echo "| examples/$example vs ${peer:-(no peer)} | slimpack | peer | ours/peer |"
echo "|---|---|---|---|"
echo "| image, uncompressed | $(mb "$unc") | $([ -n "$pu" ] && mb "$pu") | $(ratio "$unc" "$pu") |"
echo "| image, compressed | $(mb "$comp") | $([ -n "$pc" ] && mb "$pc") | $(ratio "$comp" "$pc") |"
echo "| cold build, empty cache (s) | $oc | $pcold | $(ratio "$oc" "$pcold") |"
echo "| rebuild after a one-line edit (s) | $oe | $pedit | $(ratio "$oe" "$pedit") |"
echo "| rebuild, nothing changed (s) | $ow | | |"
echo "| layers rebuilt after the edit | $rebuilt | | |"
echo "| bytes pushed after the edit | $pushed | $peer_pushed | $(ratio "$pushed" "$peer_pushed") |"
echo "| time to ready, warm (ms) | $orr | $pr | $(ratio "$orr" "$pr") |"
echo "| time to ready, cold: pull + unpack + start (ms) | $oce | $pce | $(ratio "$oce" "$pce") |"
echo "| peak memory of a cold build | $(median "${rss[@]}" | cut -d. -f1) kB | | |"
echo
echo "raw: cold=(${cold[*]}) edit=(${edit[*]}) warm=(${warm[*]}) ready ours=(${ours_r[*]}) peer=(${peer_r[*]}) cold-ready (pull+unpack + ready, ms) ours=(${ours_cs[*]}) peer=(${peer_cs[*]})"
