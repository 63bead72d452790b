#!/usr/bin/env bash
# The corpus table for BENCHMARKS.md: every project in
# crates/slimpack/tests/corpus built from an EMPTY cache (its own, so each
# cold build pays its Debian packages, uv and wheels), then started the way
# its kind runs (`run --check` for services, `run` for jobs).
#
#   bench/corpus.sh                 # all projects
#   bench/corpus.sh script-bot ...  # some
#
# Prints a Markdown table. Needs what ./test.sh installs.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/slimpack
corpus=crates/slimpack/tests/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# What starts each project: a probe path for services, nothing for jobs.
declare -A probe=([stdlib-http]=/health [flask-app-run]=/ [pipfile-flask]=/health
  [pipfile-django]=/ [setup-py-app]=/health [packaged-fastapi]=/health)
projects=("$@")
[ ${#projects[@]} -eq 0 ] && projects=($(ls "$corpus"))
now() { date +%s.%N; }
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }
human() { python3 -c 'import sys; b=float(sys.argv[1]); print(f"{b/1e6:.1f} MB")' "$1"; }

echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%F); slimpack $(git rev-parse --short HEAD)"
echo
echo "| project | built | started | image (uncompressed / compressed) | cold build (s) |"
echo "|---|---|---|---|---|"
built_n=0; started_n=0
for p in "${projects[@]}"; do
  cache=$work/cache-$p
  t0=$(now)
  if SLIMPACK_CACHE=$cache "$bin" build "$corpus/$p" -o "oci:$work/$p.oci" --json >"$work/$p.json" 2>"$work/$p.err"; then
    t1=$(now)
    built=yes; built_n=$((built_n + 1))
    size="$(human "$(json "$work/$p.json" 'd["uncompressed_size"]')") / $(human "$(json "$work/$p.json" 'd["size"]')")"
    secs=$(python3 -c "print(f'{$t1-$t0:.1f}')")
    if [ -n "${probe[$p]:-}" ]; then
      SLIMPACK_CACHE=$cache "$bin" run "oci:$work/$p.oci" --check --probe "${probe[$p]}" >/dev/null 2>&1 && started=yes || started=no
    elif [ "$p" = worker-no-port ]; then
      # A worker is started and reported as one: that is its pass.
      report=$(SLIMPACK_CACHE=$cache "$bin" run "oci:$work/$p.oci" --check --startup-timeout 2 2>&1 || true)
      case "$report" in *"a worker"*) started="yes (worker)" ;; *) started=no ;; esac
    else
      code=0; SLIMPACK_CACHE=$cache "$bin" run "oci:$work/$p.oci" >/dev/null 2>&1 || code=$?
      case "$p:$code" in job-exit-code:3|*:0) started="yes (job, exit $code)" ;; *) started="no (exit $code)" ;; esac
    fi
  else
    built=no; size=""; secs=""
    if [ "$p" = python-too-old ] && grep -q "available" "$work/$p.err"; then
      started="refused, as it must"
    else
      started="no: $(head -c 120 "$work/$p.err" | tr '\n' ' ')"
    fi
  fi
  case "$started" in yes*|refused*) started_n=$((started_n + 1)) ;; esac
  echo "| $p | $built | $started | $size | $secs |"
  rm -rf "$cache"
done
echo
echo "${started_n} of ${#projects[@]} projects behave as they must (${built_n} built; python-too-old must be refused)."
