#!/usr/bin/env bash
# Installs the servers the shared-backend tests (protocol-tests/tests/cluster.rs, and the
# protocol suite with TUSK_TEST_BACKEND=s3) start on loopback:
#   redis-server  from Debian's packages (records, the expiry index and upload leases)
#   s3s-fs        from crates.io (an S3-compatible server on a local directory). Pinned to
#                 0.14.1: 0.17 needs rustc 1.96, this toolchain is 1.95. Builds in ~3 min.
#   moto          from PyPI (moto's S3 in server mode; TUSK_TEST_S3=moto), into the venv
#                 protocol-tests/backends/.venv from requirements.txt (pinned). ~15 s.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")"

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

# The venv is remade whenever requirements.txt changes (its hash is kept inside).
REQ_HASH=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/moto_server ] || [ "$(cat .venv/.requirements-hash 2>/dev/null)" != "$REQ_HASH" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get install -y python3-venv || { apt-get update && apt-get install -y python3-venv; }
  fi
  rm -rf .venv
  python3 -m venv .venv
  timeout 600 .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt
  echo "$REQ_HASH" > .venv/.requirements-hash
fi

redis-server --version
"$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")" --version
.venv/bin/python -c 'import importlib.metadata as m; print("moto", m.version("moto"))'
