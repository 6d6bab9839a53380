#!/usr/bin/env bash
# Set-up shared by scripts/demo and scripts/test: a virtualenv in .venv with uns
# installed (editable), mosquitto, and Debian's chromium and poppler-utils for batch
# reports (PDF, and the tests that open the HTML report; the review workspace's browser tests),
# with --dev slapd for the LDAP log-in tests; apt-get installs them when we are root.
# Usage: bash scripts/setup.sh [--dev]     Idempotent; re-installs when pyproject.toml changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

say() { printf 'uns setup: %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = "0" ]; }
apt_install() {
    say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$@" >/dev/null
}

# 1. Python >= 3.11
py=${PYTHON:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
    if is_root; then apt_install python3 python3-venv; else
        say "Python 3.11+ is missing: run 'sudo apt-get install python3 python3-venv'"; exit 1; fi
fi
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "Python 3.11 or newer is needed, found $("$py" --version 2>&1)"; exit 1
fi

# 2. mosquitto (the broker the demo and the integration tests start on a free port)
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    if is_root; then apt_install mosquitto; else
        say "mosquitto is missing: run 'sudo apt-get install mosquitto' and try again"; exit 1; fi
fi

# 2b. openssl: the test suite makes a private CA for its TLS tests
if [ -n "$extras" ] && ! command -v openssl >/dev/null 2>&1; then
    if is_root; then apt_install openssl; else
        say "openssl is missing (needed by the TLS tests): run 'sudo apt-get install openssl'"; exit 1; fi
fi

# 2c. chromium (PDF batch reports; the tests open HTML reports in it) and pdftotext (tests)
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v pdftotext >/dev/null 2>&1 || missing="$missing poppler-utils"
if [ -n "$missing" ]; then
    if is_root; then apt_install $missing; else
        say "for PDF batch reports and their tests run 'sudo apt-get install$missing'"; fi
fi

# 2d. iproute2: the cross-host scale-out test builds network namespaces (skipped without root)
if [ -n "$extras" ] && is_root && ! command -v ip >/dev/null 2>&1; then
    apt_install iproute2
fi

# 2e. slapd and ldap-utils: the review workspace's LDAP log-in is tested against a real slapd
# that the test starts with its own configuration (the package's default database is skipped)
if [ -n "$extras" ] && [ ! -x /usr/sbin/slapd ]; then
    if is_root; then
        echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
        apt_install slapd ldap-utils
    else
        say "the LDAP log-in tests need slapd: run 'sudo apt-get install slapd ldap-utils' (they are skipped otherwise)"
    fi
fi

# 2f. a C compiler and the Python headers: pip builds the native DATA decoder with them
#     (uns/sparkplug/_speedups.c).  Optional: without them uns runs the pure-Python decoder.
include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
missing=""
command -v cc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
[ -f "$include/Python.h" ] || missing="$missing python3-dev"
if [ -n "$missing" ]; then
    if is_root; then apt_install $missing; else
        say "the native decoder needs a C compiler and the Python headers: run 'sudo apt-get install$missing' (uns runs without it, slower)"; fi
fi

# 3. virtualenv + packages
if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if is_root; then apt_install python3-venv && "$py" -m venv .venv; else
            say "the Python venv module is missing: run 'sudo apt-get install python3-venv'"; exit 1; fi
    fi
fi
stamp=".venv/.uns-installed${extras}"
# the C sources too: an editable install builds the extension once, so a changed source re-installs
want=$(cat pyproject.toml uns/sparkplug/_speedups.c uns/sparkplug/_blocks.c uns/sparkplug/spdata.h uns/sparkplug/spblock.h uns/mqtt/wire/_fastwire.c uns/mqtt/wire/mqttrun.h | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing uns${extras} and its dependencies into .venv (first run takes a minute)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}" 2>&1 \
        | grep -v -e '^WARNING: Location' -e 'BuildBackendWarning: .*ext-modules' -e 'config = read_configuration' || true
    .venv/bin/python -c 'import uns.cli.app, uns.lake' || { say "installation failed"; exit 1; }
    echo "$want" > "$stamp"
fi
