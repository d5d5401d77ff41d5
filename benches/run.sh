#!/bin/sh
# One command: tambo against Debian's chasquid on this machine (benches/README.md).
# Needs root (mount namespaces, dnsmasq on 127.0.0.153:53), chasquid, dnsmasq, cc, openssl.
exec /usr/bin/python3 "$(dirname "$0")/bench.py" "$@"
