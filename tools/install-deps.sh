#!/bin/sh
# Installs everything bitnet needs to build and test on Debian 12 (run as root or with sudo).
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  g++ cmake ninja-build pkg-config \
  libgtest-dev libgmock-dev libbenchmark-dev \
  nlohmann-json3-dev libpcre2-dev libcli11-dev libcpp-httplib-dev libxxhash-dev \
  python3 python3-numpy tmux nginx >/dev/null
# The live tokenizer cross-check uses the npm package llama3-tokenizer-js when npm is present.
if command -v npm >/dev/null 2>&1; then
  (cd "$(dirname "$0")/../tests/tokenizer_reference" && npm ci --no-audit --no-fund --silent) ||
    echo "install-deps: npm ci failed; the live tokenizer check will be skipped" >&2
fi
# The server test drives bitnet serve with the official OpenAI Node client (npm package openai).
if command -v npm >/dev/null 2>&1; then
  (cd "$(dirname "$0")/../tests/server_client" && npm ci --no-audit --no-fund --silent) ||
    echo "install-deps: npm ci failed; the OpenAI client test will be skipped" >&2
fi
