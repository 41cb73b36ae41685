#!/usr/bin/env bash
# Installs what the tests need, by package name, each step only when something is missing:
#   - Debian packages: Chromium and its WebDriver (tests/python/test_browser.py), Prometheus
#     (ships promtool; tests/python/test_monitoring.py), a font for the screenshots. `sudo` is
#     used when not root.
#   - PyPI packages (tests/python/requirements.txt) into the project's virtual environment .venv
#     (git-ignored), created with `python3 -m venv`; the system interpreter is left alone.
#   - the SmolLM2 model file (scripts/fetch-models.sh).
# Sourced or run by scripts/test.sh; `source .venv/bin/activate` afterwards gives the same Python.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

apt_packages=()
for pair in chromium:chromium chromedriver:chromium-driver prometheus:prometheus \
  promtool:prometheus; do
  tool="${pair%%:*}"
  command -v "$tool" >/dev/null || apt_packages+=("${pair#*:}")
done
if command -v dpkg-query >/dev/null \
  && ! dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q 'ok installed'; then
  apt_packages+=(fonts-dejavu-core)
fi
# apt-get install PACKAGE..., with sudo when not root.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "test-deps: missing Debian packages $*, and no sudo to install them" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  if ! command -v apt-get >/dev/null; then
    echo "test-deps: missing $* and no apt-get; install them by hand" >&2
    exit 1
  fi
  echo "test-deps: apt-get install $*"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "$@" >/dev/null
}

if [ "${#apt_packages[@]}" -gt 0 ]; then
  mapfile -t apt_packages < <(printf '%s\n' "${apt_packages[@]}" | sort -u)
  apt_install "${apt_packages[@]}"
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "test-deps: creating $venv (python3 -m venv)"
  if ! python3 -m venv "$venv"; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv" || { rm -rf "$venv"; echo "test-deps: python3 -m venv failed" >&2; exit 1; }
  fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/tests/python/requirements.txt"

PATH="$venv/bin:$PATH" bash "$root/scripts/fetch-models.sh" >/dev/null
