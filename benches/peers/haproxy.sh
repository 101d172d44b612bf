#!/bin/sh
# shellcheck disable=SC3045 # ulimit -n: dash, bash and busybox sh all have it
# HAProxy as an `--against` peer of `cargo bench --bench compare`:
#
#   cargo bench --bench compare -- --against 'haproxy=sh benches/peers/haproxy.sh {listen} {upstream}'
#
# One thread (as edgefwd and tokio-current), in the foreground, the same 64 KiB buffers,
# no logging. HAProxy sets TCP_NODELAY on both sides by default. maxconn follows the fd
# limit the bench gives its peers (2 fds per connection, after 256 pipes of 2 fds that
# haproxy.cfg allows), so the idle scenario can fill it as with the others.
# Splice stays off (HAProxy's default); with EDGEFWD_SPLICE=1 in the environment HAProxy
# splices both ways through 1 MiB pipes, as edgefwd does by default (see haproxy.cfg):
#
#   --scenarios bulk-up,bulk-duplex \
#   --against 'haproxy-splice=env EDGEFWD_SPLICE=1 sh benches/peers/haproxy.sh {listen} {upstream}'
#
# (bulk only: splicing HAProxy keeps a spare pipe after its connections close, which the idle
# scenario's check for fds left behind reports as a failed run.)
set -eu
[ $# -eq 2 ] || { echo "usage: $0 LISTEN_ADDR UPSTREAM_ADDR" >&2; exit 2; }
EDGEFWD_LISTEN=$1 EDGEFWD_UPSTREAM=$2
EDGEFWD_MAXCONN=$(( ($(ulimit -n) - 64 - 2 * 256) / 2 ))
[ "$EDGEFWD_MAXCONN" -gt 0 ] || { echo "$0: fd limit $(ulimit -n) is too low" >&2; exit 2; }
export EDGEFWD_LISTEN EDGEFWD_UPSTREAM EDGEFWD_MAXCONN
# haproxy.cfg tests whether EDGEFWD_SPLICE is defined, whatever its value: only 1 counts.
[ "${EDGEFWD_SPLICE-}" = 1 ] || unset EDGEFWD_SPLICE
exec haproxy -db -f "$(dirname "$0")/haproxy.cfg"
