#!/usr/bin/env bash
# A real Matrix homeserver for end-to-end tests: Dendrite v0.15.2, pinned by
# this directory's go.mod/go.sum (a module of its own, so that Dendrite's
# ~90 dependencies stay out of the service's go.mod). Background and
# pitfalls: ../../docs or the research notes (homeserver-testbed.md).
#
#   dendrite.sh build
#       Builds dendrite and generate-keys (CGO_ENABLED=0: pure-Go SQLite, no
#       gcc) into a cache directory reused between runs, keyed by go.sum and
#       the Go version, and prints that directory. Warm: instant. Cold: about
#       2-3 minutes on 2 cores (plus ~0.9 GB of modules the first time).
#       Cache root: $DENDRITE_CACHE_DIR, else $XDG_CACHE_HOME/rtc-sessions/dendrite,
#       else ~/.cache/rtc-sessions/dendrite.
#
#   dendrite.sh config WORKDIR [APPSERVICE_YAML...]
#       Writes WORKDIR/dendrite.yaml (SQLite databases in WORKDIR, in-memory
#       JetStream, registration shared secret, no rate limiting, each
#       APPSERVICE_YAML registration file given to app_service_api) and a
#       fresh signing key; with FED_PORT, a self-signed TLS certificate and
#       federation over 127.0.0.0/8. WORKDIR must be empty or absent.
#       Prints the arguments to run dendrite with (one per line).
#
#   dendrite.sh start WORKDIR [APPSERVICE_YAML...]
#       build + config, then runs dendrite in the background (log in
#       WORKDIR/dendrite.log, pid in WORKDIR/dendrite.pid) and waits until
#       the client API answers. Stop it with: kill "$(cat WORKDIR/dendrite.pid)".
#
# Environment (config, start):
#   PORT         client API port on 127.0.0.1 (default 8008)
#   SERVER_NAME  the server name (default localhost; with federation use
#                127.0.0.1:$FED_PORT so that the other servers can reach it)
#   SECRET       registration shared secret (default: a random one, written
#                to WORKDIR/registration_shared_secret)
#   FED_PORT     enables federation (TLS) on 127.0.0.1:$FED_PORT; unset: off
#   LOG_LEVEL    dendrite's log level (default warn)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "dendrite.sh: $*" >&2; exit 1; }

cache_root() {
  if [ -n "${DENDRITE_CACHE_DIR:-}" ]; then echo "$DENDRITE_CACHE_DIR"
  elif [ -n "${XDG_CACHE_HOME:-}" ]; then echo "$XDG_CACHE_HOME/rtc-sessions/dendrite"
  elif [ -n "${HOME:-}" ]; then echo "$HOME/.cache/rtc-sessions/dendrite"
  else echo "${TMPDIR:-/tmp}/rtc-sessions-cache/dendrite"; fi
}

# build prints the directory holding bin/dendrite and bin/generate-keys,
# building them first unless that directory is complete.
build() {
  command -v go >/dev/null || die "the go command is needed to build Dendrite"
  local root key dir
  root=$(cache_root)
  key=$( (cat "$HERE/go.mod" "$HERE/go.sum"; go env GOVERSION GOOS GOARCH) | sha256sum | cut -c1-16)
  dir="$root/$key"
  if [ -x "$dir/bin/dendrite" ] && [ -x "$dir/bin/generate-keys" ]; then
    echo "$dir"; return
  fi
  mkdir -p "$root"
  # Several test processes (go test runs packages in parallel) may ask at
  # once: one builds, the others wait for it.
  exec 9>"$root/.lock"
  flock 9
  if [ ! -x "$dir/bin/dendrite" ] || [ ! -x "$dir/bin/generate-keys" ]; then
    local tmp start
    tmp=$(mktemp -d "$root/.build-XXXXXX")
    start=$(date +%s)
    echo "dendrite.sh: building Dendrite into $dir (cold: a few minutes)" >&2
    if ! (cd "$HERE" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/bin/" \
          github.com/element-hq/dendrite/cmd/dendrite github.com/element-hq/dendrite/cmd/generate-keys) >&2; then
      rm -rf "$tmp"; die "building Dendrite failed"
    fi
    rm -rf "$dir"
    mv "$tmp" "$dir"
    echo "dendrite.sh: built in $(( $(date +%s) - start ))s" >&2
  fi
  flock -u 9
  echo "$dir"
}

# config WORKDIR [AS...]: writes the configuration and key; prints dendrite's arguments.
config() {
  [ $# -ge 1 ] || die "usage: dendrite.sh config WORKDIR [APPSERVICE_YAML...]"
  local w=$1; shift
  local bindir; bindir=$(build)/bin
  mkdir -p "$w"
  w=$(cd "$w" && pwd)
  [ -z "$(ls -A "$w")" ] || die "$w is not empty"
  local port=${PORT:-8008} server_name=${SERVER_NAME:-localhost} fed_port=${FED_PORT:-}
  local secret=${SECRET:-}
  [ -n "$secret" ] || secret=$(openssl rand -hex 16)
  (umask 077; printf '%s' "$secret" > "$w/registration_shared_secret")
  "$bindir/generate-keys" -private-key "$w/matrix_key.pem" >/dev/null
  local fed_yaml="disable_federation: true" fed_net="" https=(-https-bind-address=)
  if [ -n "$fed_port" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
      -keyout "$w/tls.key" -out "$w/tls.crt" 2>/dev/null
    https=(-https-bind-address "127.0.0.1:$fed_port" -tls-cert "$w/tls.crt" -tls-key "$w/tls.key")
    fed_yaml="disable_federation: false"
    # The defaults deny loopback peers, and the certificates are self-signed.
    fed_net="disable_tls_validation: true, allow_networks: [127.0.0.0/8], deny_networks: [], "
  fi
  local as_list="[]" f
  if [ $# -gt 0 ]; then
    as_list=""
    for f in "$@"; do
      [ -f "$f" ] || die "appservice registration $f: no such file"
      as_list+="\"$(cd "$(dirname "$f")" && pwd)/$(basename "$f")\","
    done
    as_list="[${as_list%,}]"
  fi
  db() { echo "{connection_string: \"file:$w/$1.db\"}"; }
  cat > "$w/dendrite.yaml" <<YAML
version: 2
global:
  server_name: "$server_name"
  private_key: $w/matrix_key.pem
  $fed_yaml
  jetstream: {in_memory: true, storage_path: $w}
  presence: {enable_inbound: false, enable_outbound: false}
  report_stats: {enabled: false}
app_service_api:
  config_files: $as_list
client_api:
  registration_disabled: true
  registration_shared_secret: "$secret"
  rate_limiting: {enabled: false}
federation_api: {${fed_net}database: $(db federationapi)}
key_server: {database: $(db keyserver)}
media_api: {database: $(db mediaapi), base_path: $w/media}
room_server: {database: $(db roomserver)}
sync_api: {database: $(db syncapi), search: {enabled: false}}
user_api: {account_database: $(db userapi), bcrypt_cost: 4}
relay_api: {database: $(db relayapi)}
mscs: {database: $(db mscs)}
logging: [{type: std, level: ${LOG_LEVEL:-warn}}]
YAML
  printf '%s\n' "$bindir/dendrite" -config "$w/dendrite.yaml" -http-bind-address "127.0.0.1:$port" "${https[@]}"
}

start() {
  [ $# -ge 1 ] || die "usage: dendrite.sh start WORKDIR [APPSERVICE_YAML...]"
  local w=$1 port=${PORT:-8008} args=()
  mapfile -t args < <(config "$@")
  [ ${#args[@]} -gt 0 ] || die "config failed"
  w=$(cd "$w" && pwd)
  "${args[@]}" >"$w/dendrite.log" 2>&1 &
  echo $! > "$w/dendrite.pid"
  local i
  for i in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null; then
      echo "dendrite.sh: http://127.0.0.1:$port up (pid $(cat "$w/dendrite.pid"), log $w/dendrite.log)" >&2
      return 0
    fi
    kill -0 "$(cat "$w/dendrite.pid")" 2>/dev/null || { cat "$w/dendrite.log" >&2; die "dendrite exited"; }
    sleep 0.1
  done
  cat "$w/dendrite.log" >&2
  kill "$(cat "$w/dendrite.pid")" 2>/dev/null || true
  die "dendrite did not answer on 127.0.0.1:$port within 30s"
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  config) config "$@" ;;
  start) start "$@" ;;
  *) die "usage: dendrite.sh build | config WORKDIR [AS_YAML...] | start WORKDIR [AS_YAML...]" ;;
esac
