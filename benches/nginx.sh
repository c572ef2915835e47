# shellcheck shell=bash
# The nginx peer's configuration, shared by compare.sh, tls.sh and live_instructions.sh (sourced,
# not run): one worker serving compare.sh's two routes on 127.0.0.1.

# nginx_conf DIR PORT MASTER CONNECTIONS [NOFILE [CERT KEY]]: writes DIR/nginx.conf, with its
# pid, log and temporary files in DIR. MASTER is `on` (compare.sh: a master and one worker, as
# deployed) or `off` (one process that serves, for callgrind to follow); NOFILE, if given (may be
# empty), is the worker's open-file limit. With CERT and KEY it serves HTTPS only, TLS 1.2 and
# 1.3, with no session resumption (tls.sh: every handshake in H a full one).
nginx_conf() {
    local dir=$1 port=$2 master=$3 connections=$4 nofile=${5:-} cert=${6:-} key=${7:-} listen
    listen="127.0.0.1:$port"
    if [ -n "$cert" ]; then
        listen+=" ssl;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_conf_command NumTickets 0;
        ssl_session_tickets off;
        ssl_session_cache off"
    fi
    mkdir -p "$dir"
    {
        printf 'daemon off;\nmaster_process %s;\nworker_processes 1;\n' "$master"
        [ -z "$nofile" ] || printf 'worker_rlimit_nofile %s;\n' "$nofile"
        cat <<CONF
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $connections; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen $listen;
        location = /plaintext { default_type text/plain; return 200 'Hello, World!'; }
        location = /json { default_type application/json; return 200 '{"message":"Hello, World!"}'; }
    }
}
CONF
    } >"$dir/nginx.conf"
}
