package authz

import (
	"bytes"
	"fmt"
	"strings"
)

// A Claim is one thing docs/nats.md says a user can or cannot do. The
// table of the docs is rendered from Claims (RenderClaims), and the tests
// check every claim against a server loaded with the shipped configuration:
// what a user may do works, what it may not is refused (by the server's
// permissions, or by the stream's settings for what headers would do).
type Claim struct {
	ID   string // stable key the tests refer to
	User string
	May  bool
	What string // Markdown, as the docs show it
}

// Claims returns every claim, per user in the order of Users.
func Claims() []Claim {
	return []Claim{
		{"ingest.raw", UserIngest, true, "publish raw inputs on `rtc.raw.<roomTok>` (RTC_RAW)"},
		{"ingest.ensure-raw", UserIngest, true, "look up RTC_RAW, and create it when missing (`topology.EnsureRaw`)"},
		{"ingest.reconcile", UserIngest, true, "list the subjects of `rtc_sessions`' stream; receive `rtcctl reconcile` requests on `rtc.ctl.ingest.reconcile` and answer them into the operator's inbox (`_INBOX_operator.>`)"},
		{"ingest.no-read", UserIngest, false, "read session events (`RTC_EVENTS`, `rtc.live.>`), `rtc_rooms` or `rtc_sessions`' values, or consume RTC_RAW"},
		{"ingest.no-write", UserIngest, false, "publish session events or write a KV bucket"},
		{"ingest.no-timers", UserIngest, false, "publish on `rtc.timer.>` or `rtc.fired.>` (the timers)"},
		{"ingest.no-headers", UserIngest, false, "roll up, schedule or expire anything with headers on its inputs (`Nats-Rollup`, `Nats-Schedule`, `Nats-TTL`: RTC_RAW refuses them)"},
		{"ingest.no-destroy", UserIngest, false, "delete, purge or update a stream, or delete a stored message"},
		{"ingest.no-snoop", UserIngest, false, "read another user's inbox, or send a reconcile request"},
		{"ingest.no-relay", UserIngest, false, "answer a reconcile request anywhere but in the operator's inbox (a reply subject naming a stream's subject gets no answer: no `allow_responses`)"},

		{"aggregator.topology", UserAggregator, true, "create, update and look up its streams (RTC_RAW, RTC_EVENTS, RTC_DLQ, RTC_TIMERS), its buckets and the partition consumers of RTC_RAW"},
		{"aggregator.publish", UserAggregator, true, "publish session events (`rtc.session.>`) and dead letters (`rtc.dlq.>`)"},
		{"aggregator.timers", UserAggregator, true, "publish the rooms' timers: message schedules on `rtc.timer.<roomTok>` in RTC_TIMERS (the only user that may)"},
		{"aggregator.kv", UserAggregator, true, "read, write and watch every key of its buckets"},
		{"aggregator.consume", UserAggregator, true, "pull from, acknowledge and unpin the partition consumers of RTC_RAW"},
		{"aggregator.no-destroy", UserAggregator, false, "delete or purge a stream or bucket, delete a partition consumer or a message"},
		{"aggregator.no-raw", UserAggregator, false, "publish raw inputs, or fired timers (`rtc.fired.>`: the server's scheduler writes them)"},
		{"aggregator.no-headers", UserAggregator, false, "roll up RTC_EVENTS with a header (it refuses `Nats-Rollup`)"},
		{"aggregator.no-snoop", UserAggregator, false, "read another user's inbox"},

		{"subscriber.read", UserSubscriber, true, "read RTC_EVENTS and RTC_HISTORY through ephemeral (ordered) consumers, with nats.go, nats.js, nats.py or the nats CLI (also the account info, the stream names, consumer info); subscribe to `rtc.live.>`"},
		{"subscriber.kv", UserSubscriber, true, "get and watch `rtc_sessions` and `rtc_rooms`"},
		{"subscriber.no-publish", UserSubscriber, false, "publish anything but those API requests: raw inputs, session events, timers, KV writes"},
		{"subscriber.no-destroy", UserSubscriber, false, "delete or purge a stream, bucket, consumer or message"},
		{"subscriber.no-read", UserSubscriber, false, "read RTC_RAW, RTC_DLQ or `rtc_workers`"},
		{"subscriber.no-snoop", UserSubscriber, false, "read another user's inbox, ask for or serve reconciliations"},

		{"operator.read", UserOperator, true, "everything the subscriber may read (through `_INBOX_operator`)"},
		{"operator.workers", UserOperator, true, "`rtcctl workers`: look up RTC_RAW and its partition consumers, watch `rtc_workers`"},
		{"operator.dlq", UserOperator, true, "`rtcctl dlq`: read RTC_DLQ, re-drive an input to `rtc.raw.>`, delete a message from RTC_DLQ"},
		{"operator.reconcile", UserOperator, true, "ask the ingest to reconcile a room (`rtcctl reconcile`)"},
		{"operator.no-destroy", UserOperator, false, "delete or purge a stream or bucket, delete a consumer, delete a message from any stream but RTC_DLQ"},
		{"operator.no-consume", UserOperator, false, "create, pull from or unpin a consumer of RTC_RAW; create or update a stream"},
		{"operator.no-write", UserOperator, false, "write a KV bucket, publish session events or dead letters"},
		{"operator.no-timers", UserOperator, false, "publish on `rtc.timer.>` or `rtc.fired.>` (the timers)"},
		{"operator.no-headers", UserOperator, false, "roll up, schedule or expire anything with headers on a re-driven input (RTC_RAW refuses them)"},
		{"operator.no-snoop", UserOperator, false, "read another user's inbox, serve reconciliations"},

		{"api.read", UserAPI, true, "read RTC_EVENTS and RTC_HISTORY through ephemeral (ordered) consumers; get and watch `rtc_sessions` (through `_INBOX_api`)"},
		{"api.no-publish", UserAPI, false, "publish anything but those API requests: raw inputs, session events, timers, KV writes"},
		{"api.no-destroy", UserAPI, false, "delete or purge a stream, bucket, consumer or message"},
		{"api.no-read", UserAPI, false, "read RTC_RAW, RTC_DLQ, `rtc_rooms`, `rtc_workers` or `rtc.live.>`"},
	}
}

// Markers around the generated table in docs/nats.md.
const (
	ClaimsDocPath     = "docs/nats.md"
	ClaimsBeginMarker = "<!-- BEGIN claims generated by `go test ./internal/authz -update` from authz.Claims; each checked by TestShippedPermissions -->\n"
	ClaimsEndMarker   = "<!-- END claims -->\n"
)

// RenderClaims renders the claims as the Markdown table that goes between
// the markers in docs/nats.md: one row per user, what it may do and what
// it may not.
func RenderClaims() []byte {
	var b bytes.Buffer
	b.WriteString("| user | may | may not |\n|---|---|---|\n")
	for _, u := range Users() {
		var may, mayNot []string
		for _, c := range Claims() {
			if c.User != u.Name {
				continue
			}
			if c.May {
				may = append(may, c.What)
			} else {
				mayNot = append(mayNot, c.What)
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", u.Name, strings.Join(may, "; "), strings.Join(mayNot, "; "))
	}
	return b.Bytes()
}
