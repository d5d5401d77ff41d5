#!/usr/bin/env bash
# Runs every test: the README's "Run it" commands in a fresh clone (tests/readme.sh), unit
# tests of the crate (cargo test) and the end-to-end suite, which drives the release binary
# with real clients (Python smtplib, raw sockets, swaks) on loopback.
#
# What the tests need beyond Rust is the list of Debian packages in tests/install-deps.sh,
# checked first: as root, missing ones are installed; otherwise this stops, naming them and
# the command that installs them. The end-to-end suite needs root too. With everything
# installed, a test that cannot find its peer fails (TAMBO_REQUIRE_PEERS=1); a test skipped
# for another reason is listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust from rustup belongs to the user who installed it, but `sudo` resets PATH (Debian's
# secure_path) and HOME: root would find no cargo, or rustup no toolchain. Under sudo, use the
# invoking user's toolchains (RUSTUP_HOME, only read) with root's own CARGO_HOME for the
# crate downloads, so that nothing root-owned lands in the user's ~/.cargo.
if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -n "$user_home" ] && [ -x "$user_home/.cargo/bin/cargo" ]; then
        export PATH="$user_home/.cargo/bin:$PATH"
        if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$user_home/.rustup" ]; then
            export RUSTUP_HOME="$user_home/.rustup"
        fi
        echo "tests/run.sh: using $SUDO_USER's Rust ($user_home/.cargo/bin)" >&2
    fi
fi
if ! command -v cargo >/dev/null; then
    echo "tests/run.sh: cargo not found on PATH: install Rust with rustup" \
        "(https://rustup.rs), or put its bin folder on PATH" >&2
    exit 1
fi
# Under sudo, hand the build folder back to the user afterwards: a root-owned target/
# would make their next `cargo build` fail.
give_back_target() {
    if [ -n "${SUDO_UID:-}" ] && [ -n "${SUDO_GID:-}" ] && [ -d target ]; then
        chown -R "$SUDO_UID:$SUDO_GID" target
    fi
}

if ! command -v dpkg-query >/dev/null; then
    echo "tests/run.sh: not Debian (no dpkg-query): cannot check the packages the tests need" \
        "(tests/install-deps.sh lists them); running anyway" >&2
else
    missing=$(./tests/install-deps.sh --missing)
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ]; then
            ./tests/install-deps.sh
        else
            echo "tests/run.sh: the tests need Debian packages that are not installed:" \
                $missing >&2
            echo "install them with: sudo ./tests/install-deps.sh" >&2
            exit 1
        fi
    fi
fi
if [ "$(id -u)" != 0 ]; then
    # Rather now than after the build and the unit tests.
    echo "tests/run.sh: the end-to-end suite needs root (Dovecot's test Maildirs belong to" \
        "nobody; the MTA-STS policy server listens on 127.0.0.200:443): sudo ./tests/run.sh" >&2
    exit 1
fi

# Every peer is installed now: a unit test that cannot find its peer fails
# (src/testsupport.rs), and skips for other reasons are collected here and listed at the end.
export TAMBO_REQUIRE_PEERS=1
TAMBO_SKIP_LOG=$(mktemp)
export TAMBO_SKIP_LOG
report_skips() {
    if [ -s "$TAMBO_SKIP_LOG" ]; then
        echo
        echo "skipped:"
        sort -u "$TAMBO_SKIP_LOG" | sed -e 's/^skipped: /  /'
    fi
    rm -f "$TAMBO_SKIP_LOG"
    give_back_target
}
trap report_skips EXIT

# First: it builds the last commit in a clone that shares target/ (see there); the builds
# below reuse that build, or compile the working tree when it differs from the commit.
./tests/readme.sh

cargo build --release --locked
cargo test --release --locked

# Debian's python3, which has the python3-* packages: a pyenv or venv python3 earlier on PATH
# does not. -rs lists the reason of every skipped test.
TAMBO_BIN="$PWD/target/release/tambo" /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider \
    tests/e2e
