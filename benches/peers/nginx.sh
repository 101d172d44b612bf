#!/bin/sh
# shellcheck disable=SC3045 # ulimit -n: dash, bash and busybox sh all have it
# nginx's stream module as an `--against` peer of `cargo bench --bench compare`:
#
#   cargo bench --bench compare -- --against 'nginx=sh benches/peers/nginx.sh {listen} {upstream}'
#
# One process (no master, one worker's loop in it: as edgefwd and tokio-current), in the
# foreground, the same 64 KiB buffers, TCP_NODELAY (nginx's default), half-close passed on
# (off by default in nginx, always on in edgefwd), no access log.
# nginx reads no environment in its config, so this writes one per listening address into a
# directory of this user's own under $TMPDIR. It execs nginx, and the bench kills nginx with
# SIGKILL, so neither can remove the config and pid files after the run: each start removes
# the ones older than an hour instead.
# NGINX_STREAM_MODULE names the module to load; set it empty where stream is built in.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 LISTEN_ADDR UPSTREAM_ADDR" >&2; exit 2; }
module=${NGINX_STREAM_MODULE-/usr/lib/nginx/modules/ngx_stream_module.so}
dir=${TMPDIR:-/tmp}/edgefwd-bench-nginx-$(id -u)
[ -d "$dir" ] || mkdir -m 700 "$dir"
if [ -L "$dir" ] || [ ! -O "$dir" ]; then
    echo "$0: $dir is not a directory of this user's own" >&2
    exit 1
fi
find "$dir" -type f -mmin +60 -exec rm -f {} +
name=$(printf '%s' "$1" | tr -c '0-9a-zA-Z' '_')
{
    if [ -n "$module" ]; then
        echo "load_module \"$module\";"
    fi
    cat <<CONF
daemon off;
master_process off;
pid "$dir/$name.pid";
error_log stderr error;
events {
    worker_connections $(ulimit -n);
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
} > "$dir/$name.conf"
exec nginx -p "$dir" -c "$dir/$name.conf" -e stderr
