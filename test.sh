#!/usr/bin/env bash
# The one test command (README, CI): installs the system tools the tests
# use, checks formatting and lints, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")"

# tool → Debian package
declare -A pkg=([buildah]=buildah [debootstrap]=debootstrap [bwrap]=bubblewrap [skopeo]=skopeo [umoci]=umoci [dpkg-query]=dpkg [git]=git [python3]=python3 [curl]=curl [slirp4netns]=slirp4netns [docker-registry]=docker-registry [htpasswd]=apache2-utils [base64]=coreutils [patchelf]=patchelf [ldd]=libc-bin [gcc]=gcc [make]=make [xz]=xz-utils)
need=()
for t in "${!pkg[@]}"; do command -v "$t" >/dev/null || need+=("${pkg[$t]}"); done
# Libraries the free-threaded CPython built from source for the tests links
# (tests/fixtures/make-freethreaded-python); python3-venv for the SPDX
# validator below.
for p in libssl-dev zlib1g-dev libffi-dev python3-venv; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# An independent SPDX validator for the SBOM tests: the spdx-tools package
# (PyPI), pinned, in a venv of its own under target/.
spdx=target/spdx-tools
if [ ! -x "$spdx/bin/pyspdxtools" ]; then
  rm -rf "$spdx"
  python3 -m venv "$spdx"
  PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt} "$spdx/bin/pip" install -q spdx-tools==0.8.5
fi
export SLIMPACK_SPDX_VALIDATOR=$PWD/$spdx/bin/pyspdxtools

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --workspace --locked
