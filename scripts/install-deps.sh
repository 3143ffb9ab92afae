#!/usr/bin/env bash
# Installs the system packages Conveyor's build, dev servers and tests need, if
# missing: a Java 17 runtime and Maven (Kafka from Maven Central), Debian's
# redis-server, the C toolchain bits librdkafka's and OpenSSL's bundled builds
# use, the openssl command (tests make their certificates with it) and
# Chromium (the dashboard's browser tests drive Debian's, headless).
# Fast when everything is there; needs root (or sudo) only when something is not.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_cmd java || need+=(openjdk-17-jre-headless)
have_cmd mvn || need+=(maven)
have_cmd redis-server || need+=(redis-server)
have_cmd cmake || need+=(cmake)
have_cmd g++ || need+=(g++)
have_cmd make || need+=(make)
have_cmd pkg-config || need+=(pkg-config)
# The bundled OpenSSL's build runs perl; tests make certificates with openssl.
have_cmd perl || need+=(perl)
have_cmd openssl || need+=(openssl)
have_cmd chromium || need+=(chromium)
for pkg in libcurl4-openssl-dev zlib1g-dev libssl-dev python3-venv; do
  have_pkg "$pkg" || need+=("$pkg")
done

if ((${#need[@]})); then
  echo "installing system packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! have_cmd cargo; then
  echo "Rust is needed to build Conveyor's core: see https://rustup.rs" >&2
  exit 1
fi
java -version 2>&1 | head -1 | grep -Eq '"(1[7-9]|[2-9][0-9])' || {
  echo "Kafka 4 needs Java 17 or newer; found: $(java -version 2>&1 | head -1)" >&2
  exit 1
}
