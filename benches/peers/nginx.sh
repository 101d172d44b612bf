#!/bin/sh
# nginx's stream module as an `--against` peer of `cargo bench --bench compare`:
#
#   cargo bench --bench compare -- --against 'nginx=sh benches/peers/nginx.sh {listen} {upstream}'
#
# One process (no master, one worker's loop in it: as edgefwd and tokio-current), in the
# foreground, the same 64 KiB buffers, TCP_NODELAY (nginx's default), half-close passed on
# (off by default in nginx, always on in edgefwd), no access log.
# nginx reads no environment in its config, so this writes one per listening address into
# $TMPDIR/edgefwd-bench-nginx (it execs nginx, so it cannot remove it after; it removes the
# ones older than a day instead).
set -eu
[ $# -eq 2 ] || { echo "usage: $0 LISTEN_ADDR UPSTREAM_ADDR" >&2; exit 2; }
module=${NGINX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
dir=${TMPDIR:-/tmp}/edgefwd-bench-nginx
name=$(printf '%s' "$1" | tr -c '0-9a-zA-Z' '_')
mkdir -p "$dir"
find "$dir" -type f -mtime +0 -delete
# shellcheck disable=SC3045 # ulimit -n: dash, bash and busybox sh all have it
nofile=$(ulimit -n)
cat > "$dir/$name.conf" <<CONF
load_module $module;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $dir/$name.pid;
error_log stderr error;
events {
    worker_connections $nofile;
}
stream {
    server {
        listen $1;
        proxy_pass $2;
        proxy_buffer_size 64k;
        proxy_timeout 1h;
        proxy_half_close on;
    }
}
CONF
exec nginx -p "$dir" -c "$dir/$name.conf" -e stderr
