#!/bin/sh
# One command: tambo against Debian's chasquid and Postfix on this machine (benches/README.md).
# Needs root (mount namespaces, DNS on 127.0.0.153:53, Postfix), chasquid, postfix, cc, openssl.
exec /usr/bin/python3 "$(dirname "$0")/bench.py" "$@"
