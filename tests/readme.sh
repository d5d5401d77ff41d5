#!/usr/bin/env bash
# Runs the README's "Run it" commands as a reader of the repository would: in a fresh clone,
# `cargo run --release -- serve`, then the swaks commands and the `ls` shown there, checking
# that each message lands in the example user's Maildir; then stops the server (SIGTERM).
#
# The commands are read from the clone's README.md, "## Run it" section: its first ```sh
# block starts the server, the second is run command by command. So what the README shows
# is what is tested; this script only insists that the two swaks commands (port 25 style on
# 2525, submission with STARTTLS and AUTH on 2587) are still there.
#
# Cost: the clone shares this checkout's target directory (CARGO_TARGET_DIR), so no
# dependency is built twice. The tambo crate is compiled in the clone (its files are new to
# cargo: about a minute on 2 cores), under the same file names as this checkout's build (the
# package path relative to the workspace is the same), and cargo judges by file times: for
# the same commit, the clone's build then stands in for this checkout's (in CI, where this
# runs before any build, the build after it only links tambo-bench). When this checkout
# differs from its last commit, the clone's tambo build is removed afterwards
# (`cargo clean -p tambo`), so that the next build compiles the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PORTS=(2525 2587 2465)  # the example's conf/tambo.json: MX, submission, implicit TLS
SMTP_PORT=2525
START_DEADLINE=60       # seconds from `cargo run` (already built) to listening
SEND_DEADLINE=60        # seconds per README command
STOP_DEADLINE=10        # seconds from SIGTERM to exit
MAILDIR=data/mail/example.test/alice/new

say() { echo "readme.sh: $*" >&2; }
fail() {
    say "FAIL: $*"
    exit 1
}
# A skip is reported like the unit tests' (src/testsupport.rs): stderr and TAMBO_SKIP_LOG.
skip() {
    say "skipped: $*"
    if [ -n "${TAMBO_SKIP_LOG:-}" ]; then
        echo "skipped: tests/readme.sh: $*" >>"$TAMBO_SKIP_LOG"
    fi
    exit 0
}

# Something accepts connections on 127.0.0.1:$1 (loopback: refused at once when nothing
# listens; the timeout is for the odd firewall).
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

in_use=()
for port in "${PORTS[@]}"; do
    if port_open "$port"; then in_use+=("$port"); fi
done
if [ ${#in_use[@]} -gt 0 ]; then
    fail "127.0.0.1 port(s) ${in_use[*]} already in use; the README's example config listens" \
        "on ${PORTS[*]} (conf/tambo.json): stop what listens there (another tambo serve?)"
fi
# As root (sudo ./tests/run.sh) in a checkout that belongs to the user who cloned it, git
# refuses to read the repository ("dubious ownership", safe.directory, git 2.35.2 and later):
# rev-parse fails, and so does the clone below. A global config of this run marks this one
# checkout safe (the command-line forms, -c and GIT_CONFIG_COUNT, are not passed on to the
# upload-pack of a local clone), and includes the usual global config.
SAFE_GITCONFIG=""
if [ "$(id -u)" = 0 ] && [ "$(stat -c %u "$REPO")" != 0 ]; then
    SAFE_GITCONFIG=$(mktemp)
    trap 'rm -f "$SAFE_GITCONFIG"' EXIT
    printf '[include]\n\tpath = %s\n[safe]\n\tdirectory = %s\n\tdirectory = %s/.git\n' \
        "${GIT_CONFIG_GLOBAL:-$HOME/.gitconfig}" "$REPO" "$REPO" >"$SAFE_GITCONFIG"
    export GIT_CONFIG_GLOBAL=$SAFE_GITCONFIG
fi
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    skip "not a git checkout: the README check runs in a clone of the repository"
fi

WORK=$(mktemp -d)
CLONE=$WORK/tambo
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # Its own process group (setsid): cargo and tambo alike.
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    if [ -n "$SAFE_GITCONFIG" ]; then rm -f "$SAFE_GITCONFIG"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'say "FAIL: line $LINENO: $BASH_COMMAND"' ERR

started=$SECONDS
git clone --quiet "$REPO" "$CLONE"
git -C "$CLONE" checkout --quiet --detach "$(git rev-parse HEAD)"
cd "$CLONE"
export CARGO_TARGET_DIR=$REPO/target

# The README's commands, from its "## Run it" section: one NUL-terminated string per block.
mapfile -d '' -t BLOCKS < <(awk '
    /^## / { in_section = ($0 == "## Run it"); next }
    in_section && /^```sh$/ { in_block = 1; block = ""; next }
    in_block && /^```$/ { in_block = 0; printf "%s%c", block, 0; next }
    in_block { block = block $0 "\n" }
' README.md)
[ ${#BLOCKS[@]} -ge 2 ] ||
    fail "README.md: expected two \`\`\`sh blocks under \"## Run it\", found ${#BLOCKS[@]}"
START_CMD=$(grep -v '^[[:space:]]*$' <<<"${BLOCKS[0]}")
[ "$(wc -l <<<"$START_CMD")" -eq 1 ] && [[ $START_CMD == "cargo run "* ]] ||
    fail "README.md: the first block under \"## Run it\" is not one \`cargo run\` command:" \
        "$START_CMD"
# The second block's commands, a backslash-continued line joined to the next.
mapfile -t COMMANDS < <(sed -e ':a' -e '/\\$/{N;s/[[:space:]]*\\\n[[:space:]]*/ /;ba}' <<<"${BLOCKS[1]}" |
    grep -v -e '^[[:space:]]*$' -e '^[[:space:]]*#')
printf '%s\n' "${COMMANDS[@]}" | grep -q "^swaks --server 127.0.0.1:$SMTP_PORT " ||
    fail "README.md: no \`swaks --server 127.0.0.1:$SMTP_PORT\` under \"## Run it\"" \
        "(update tests/readme.sh with it)"
printf '%s\n' "${COMMANDS[@]}" | grep -q '^swaks --server 127.0.0.1:2587 --tls --auth ' ||
    fail "README.md: no submission \`swaks --server 127.0.0.1:2587 --tls --auth\` under" \
        "\"## Run it\" (update tests/readme.sh with it)"

# Built first, so that the start below has a deadline of seconds, not of a build.
say "building the clone (target dir $CARGO_TARGET_DIR)"
cargo build --release --bin tambo
built=$SECONDS

say "\$ $START_CMD"
setsid bash -c "exec $START_CMD" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + START_DEADLINE))
until port_open "$SMTP_PORT"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        status=0
        wait "$SERVER_PID" || status=$?
        hint=""
        if grep -qi 'in use' "$WORK/serve.log"; then hint=" (a port of ${PORTS[*]} is taken)"; fi
        fail "the server exited (status $status) before listening$hint; its log:" \
            $'\n'"$(tail -n 30 "$WORK/serve.log")"
    fi
    [ $SECONDS -lt $deadline ] ||
        fail "not listening on 127.0.0.1:$SMTP_PORT ${START_DEADLINE}s after start; log:" \
            $'\n'"$(tail -n 30 "$WORK/serve.log")"
    sleep 0.2
done
for port in "${PORTS[@]}"; do
    port_open "$port" || fail "listening on $SMTP_PORT but not on $port; log:" \
        $'\n'"$(tail -n 30 "$WORK/serve.log")"
done

messages() {
    if [ -d "$MAILDIR" ]; then find "$MAILDIR" -type f | wc -l; else echo 0; fi
}
for cmd in "${COMMANDS[@]}"; do
    say "\$ $cmd"
    before=$(messages)
    status=0
    timeout "$SEND_DEADLINE" bash -c "$cmd" >"$WORK/out" 2>&1 || status=$?
    [ $status -eq 0 ] || fail "exit status $status:"$'\n'"$(cat "$WORK/out")"$'\n'"server log:" \
        $'\n'"$(tail -n 30 "$WORK/serve.log")"
    case $cmd in
    swaks\ *)
        # Delivered to the Maildir before the 250 (local mail is not queued), so at once.
        [ "$(messages)" -eq $((before + 1)) ] ||
            fail "no new message in $MAILDIR after it; swaks said:"$'\n'"$(cat "$WORK/out")" \
                $'\n'"server log:"$'\n'"$(tail -n 30 "$WORK/serve.log")"
        ;;
    ls\ *)
        [ -s "$WORK/out" ] || fail "it listed nothing"
        cat "$WORK/out" >&2
        ;;
    esac
done

say "stopping the server (SIGTERM to pid $SERVER_PID)"
kill -TERM "$SERVER_PID"
deadline=$((SECONDS + STOP_DEADLINE))
while kill -0 "$SERVER_PID" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "the server did not exit ${STOP_DEADLINE}s after SIGTERM"
    sleep 0.1
done
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
[ $status -eq 0 ] || fail "the server exited with status $status after SIGTERM; log:" \
    $'\n'"$(tail -n 30 "$WORK/serve.log")"

cd "$REPO"
if [ -n "$(git status --porcelain)" ]; then
    say "this checkout differs from its last commit: removing the clone's tambo build from" \
        "target/ (the next cargo build compiles the working tree)"
    cargo clean --release --quiet -p tambo
fi
say "ok in $((SECONDS - started))s (clone and build $((built - started))s, the README's" \
    "commands $((SECONDS - built))s)"
