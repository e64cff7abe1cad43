#!/bin/sh
# As the official image: a redis-server started with options only (no
# config file) listens on every interface of its container with protected
# mode off, so other containers of the network can reach it.
set -eu
if [ "${1:-}" = redis-server ] && { [ $# -eq 1 ] || [ "${2#--}" != "$2" ]; }; then
    shift
    exec redis-server --bind '* -::*' --protected-mode no "$@"
fi
exec "$@"
