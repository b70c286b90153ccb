# Sourced by scripts/serve and scripts/test: makes sure a Postgres server answers and
# exports PG_URL_BASE (postgres://user@host:port, no database).
#
# 1. DATABASE_URL already set and answering: use its server.
# 2. A server on 127.0.0.1:5432 (Debian's cluster, a developer's): use it.
# 3. Otherwise install Debian's postgresql package if missing and run a throwaway cluster
#    (trust auth, port 54329) under ${FORMPUSH_PG_DIR:-/tmp/formpush-pg}.
# FORMPUSH_PG_PRIVATE=1 skips 1 and 2: always the throwaway cluster.

pg_bin() {
    local bin
    bin=$(command -v "$1" 2>/dev/null) && { echo "$bin"; return; }
    ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

pg_answers() { # url
    local isready
    isready=$(pg_bin pg_isready)
    [ -n "$isready" ] && "$isready" -q -d "$1" >/dev/null 2>&1
}

ensure_postgres() {
    if [ "${FORMPUSH_PG_PRIVATE:-0}" = 1 ]; then
        start_private_cluster
        return
    fi
    if [ -n "${DATABASE_URL:-}" ] && pg_answers "$DATABASE_URL"; then
        PG_URL_BASE=$(printf '%s' "$DATABASE_URL" | sed -E 's#^(postgres(ql)?://[^/]+).*#\1#')
        return
    fi
    if pg_answers "postgres://postgres@127.0.0.1:5432/postgres"; then
        PG_URL_BASE="postgres://postgres@127.0.0.1:5432"
        return
    fi
    # Debian's own cluster may exist but be stopped.
    if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
        for _ in $(seq 1 30); do
            pg_answers "postgres://postgres@127.0.0.1:5432/postgres" && { PG_URL_BASE="postgres://postgres@127.0.0.1:5432"; return; }
            sleep 0.5
        done
    fi
    start_private_cluster
}

start_private_cluster() {
    local port=54329 dir="${FORMPUSH_PG_DIR:-/tmp/formpush-pg}"
    local url="postgres://postgres@127.0.0.1:$port"
    if pg_answers "$url/postgres"; then PG_URL_BASE=$url; return; fi
    if [ -z "$(pg_bin initdb)" ]; then
        echo "formpush: no Postgres found; installing Debian's postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    fi
    local initdb pg_ctl runas=()
    initdb=$(pg_bin initdb); pg_ctl=$(pg_bin pg_ctl)
    # Postgres refuses to run as root.
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
        runas=(runuser -u postgres --)
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        mkdir -p "$dir" && [ "$(id -u)" = 0 ] && chown postgres "$dir"
        "${runas[@]}" "$initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    "${runas[@]}" "$pg_ctl" -D "$dir" -l "$dir/server.log" -w \
        -o "-p $port -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=300" start >/dev/null
    PG_URL_BASE=$url
    echo "formpush: started a throwaway Postgres at $url (data in $dir)" >&2
}

ensure_postgres
export PG_URL_BASE
