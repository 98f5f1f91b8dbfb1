#!/usr/bin/env bash
# make demo: the whole pipeline on one machine with nothing but Go.
#
#   aggregator (embedded NATS JetStream, temp data dir)
#   ingest     (appservice listener for three demo homeservers)
#   ingest push: plays configs/demo/sample.jsonl as those homeservers would,
#                as real appservice transactions, shifted to now, at its own pace
#   rtcctl tail: shows the session events as they happen
#   rtcapi     (the HTTP API and the live-calls page; its URL is printed)
#
# HOLD=N keeps everything running N seconds more at the end, to look at the
# live-calls page.
# Everything listens on 127.0.0.1 on free ports; everything started here is
# stopped (by pid) and the temp dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BIN=${BIN:-bin}
SAMPLE=${SAMPLE:-configs/demo/sample.jsonl}
SPEED=${SPEED:-1}
HOLD=${HOLD:-0}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

freeport() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# http_get PORT PATH [TOKEN]: a tiny HTTP/1.0 GET with bash only (no curl
# needed), with a bearer token when given.
http_get() {
	local body auth=""
	[ -n "${3:-}" ] && auth="Authorization: Bearer $3"$'\r\n'
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s\r\n' "$2" "$auth" >&3
	body=$(cat <&3)
	exec 3<&-
	printf '%s\n' "$body"
}

wait_ready() { # NAME PORT LOG
	for _ in $(seq 1 150); do
		if http_get "$2" /readyz 2>/dev/null | head -1 | grep -q ' 200'; then
			return 0
		fi
		sleep 0.2
	done
	echo "$1 did not become ready; its log:" >&2
	cat "$3" >&2
	return 1
}

say "building aggregator, ingest, rtcctl and rtcapi into $BIN/"
mkdir -p "$BIN"
$GO build -o "$BIN/" ./cmd/aggregator ./cmd/ingest ./cmd/rtcctl ./cmd/rtcapi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rtc-demo.XXXXXX")
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

NATS_PORT=$(freeport)
AGG_HTTP=$(freeport)
AS_PORT=$(freeport)
INGEST_HTTP=$(freeport)
API_PORT=$(freeport)
NATS_URL=nats://127.0.0.1:$NATS_PORT

say "starting the aggregator (embedded NATS on $NATS_URL, data in $TMP/nats)"
RTC_AGG_EMBEDDED_DATA_DIR="$TMP/nats" RTC_AGG_EMBEDDED_PORT=$NATS_PORT \
	RTC_AGG_HTTP_LISTEN=127.0.0.1:$AGG_HTTP RTC_AGG_LOG_FORMAT=console RTC_AGG_LOG_LEVEL=warn \
	"$BIN/aggregator" >"$TMP/aggregator.log" 2>&1 &
PIDS+=($!)
wait_ready aggregator "$AGG_HTTP" "$TMP/aggregator.log"

say "starting the ingest (appservice on 127.0.0.1:$AS_PORT for hs1.example, hs2.example, hs3.example)"
RTC_INGEST_NATS_URLS=$NATS_URL RTC_INGEST_APPSERVICE_LISTEN_ADDR=127.0.0.1:$AS_PORT \
	RTC_INGEST_METRICS_ADDR=127.0.0.1:$INGEST_HTTP RTC_INGEST_LOG_LEVEL=warn \
	"$BIN/ingest" --config configs/demo/ingest.yaml >"$TMP/ingest.log" 2>&1 &
PIDS+=($!)
wait_ready ingest "$INGEST_HTTP" "$TMP/ingest.log"

say "starting rtcapi (the HTTP API and the live-calls page)"
API_TOKEN=demo-$RANDOM$RANDOM$RANDOM
printf '%s\n' "$API_TOKEN" >"$TMP/api-token"
cat >"$TMP/rtcapi.yaml" <<EOF
log: {format: console, level: warn}
nats: {urls: [$NATS_URL]}
listen: 127.0.0.1:$API_PORT
auth:
  tokens:
    - {name: demo, file: $TMP/api-token}
EOF
"$BIN/rtcapi" -config "$TMP/rtcapi.yaml" >"$TMP/rtcapi.log" 2>&1 &
PIDS+=($!)
wait_ready rtcapi "$API_PORT" "$TMP/rtcapi.log"
API_URL="http://127.0.0.1:$API_PORT/#token=$API_TOKEN"
printf 'live calls: %s\n' "$API_URL"
printf 'the API:    curl -H "Authorization: Bearer %s" http://127.0.0.1:%s/v1/sessions\n' "$API_TOKEN" "$API_PORT"

say "rtcctl tail: session events as they happen"
"$BIN/rtcctl" tail --nats "$NATS_URL" &
PIDS+=($!)
sleep 0.5

say "the homeservers push $SAMPLE as appservice transactions (timestamps shifted to now, real pacing)"
"$BIN/ingest" push --config configs/demo/ingest.yaml --to "http://127.0.0.1:$AS_PORT" --live --speed "$SPEED" "$SAMPLE"

# Carol's membership had expires=6000 and no refresh: the aggregator's durable
# timer ends it without any further event. Give the last events a moment.
sleep 2

say "rtcctl sessions: what is live now (Erin's sticky membership lasts an hour)"
"$BIN/rtcctl" sessions --nats "$NATS_URL"

say "rtcctl room '!gaming:hs2.example': what the aggregator holds for that room"
"$BIN/rtcctl" room '!gaming:hs2.example' --nats "$NATS_URL"

say "ingest metrics (per homeserver; duplicates are events two homeservers both delivered)"
http_get "$INGEST_HTTP" /metrics | grep -E '^rtc_ingest_events_(forwarded|filtered|duplicate|rejected)_total' || true

say "rtcapi: GET /v1/rooms/!gaming:hs2.example/history (the ended sessions, newest first)"
http_get "$API_PORT" '/v1/rooms/%21gaming%3Ahs2.example/history?limit=3' "$API_TOKEN" | sed -n '1p;/^{/,$p' || true

if [ "$HOLD" -gt 0 ]; then
	say "holding for ${HOLD}s: the live-calls page is at $API_URL"
	sleep "$HOLD"
fi

say "done: stopping everything started by the demo"
