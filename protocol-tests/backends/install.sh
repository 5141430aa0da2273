#!/usr/bin/env bash
# Installs the servers the shared-backend tests (protocol-tests/tests/cluster.rs, and the
# protocol suite with TUSK_TEST_BACKEND=s3) start on loopback:
#   redis-server  from Debian's packages (records, the expiry index and upload leases)
#   s3s-fs        from crates.io (an S3-compatible server on a local directory). Pinned to
#                 0.14.1: 0.17 needs rustc 1.96, this toolchain is 1.95. Builds in ~3 min.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if ! command -v redis-server >/dev/null 2>&1; then
  apt-get install -y redis-server || { apt-get update && apt-get install -y redis-server; }
fi
# The tests start their own Redis on a free port; the distribution's service is not needed.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

S3S_VERSION=0.14.1
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  cargo install "s3s-fs@${S3S_VERSION}" --features binary --locked
fi
redis-server --version
"$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")" --version
