// Package authz declares the NATS users of rtc-sessions and what each may do,
// once, in Go. The shipped server configurations are rendered from (or
// checked against) these declarations by this package's tests, so they
// cannot drift:
//
//   - configs/nats/rtc-accounts.conf: the account and its users in
//     nats-server syntax, for any nats-server (include it from your config);
//     rendered by RenderConf, byte for byte (`go test ./internal/authz -update`).
//   - deploy/k8s/nats-values.yaml: the same account under config.merge for
//     the official Helm chart; HelmAccounts is what its `accounts:` must equal.
//
// Least privilege, per service (docs/nats.md explains each grant):
//
//   - ingest publishes raw inputs (rtc.raw.>) and may look up or create
//     RTC_RAW; for reconciliation it lists the subjects of rtc_sessions' stream
//     (the rooms with live sessions) and serves `rtcctl reconcile` requests on
//     rtc.ctl.ingest.reconcile, answering them into the operator's inbox
//     (_INBOX_operator.>, not allow_responses: see Users). Nothing else: it cannot
//     read session events, write the buckets, consume RTC_RAW, or delete
//     or purge anything.
//   - aggregator owns the topology: its streams, the KV buckets, the
//     partition consumers of RTC_RAW, the timers (message schedules on
//     rtc.timer.* in RTC_TIMERS, the only user that may publish there). It
//     may create and update (never delete or purge) streams, and read and
//     write its buckets.
//   - subscriber reads: RTC_EVENTS and RTC_HISTORY through ephemeral (ordered) consumers,
//     the rtc.live.> re-publish, the rtc_sessions bucket (watch, get), and
//     rtc_rooms (get, watch: for `rtcctl room`), with any NATS client (nats.js,
//     nats.py and the nats CLI also ask for the account info, the stream
//     names and consumer info). It publishes nothing but those JetStream API
//     requests.
//   - api is the HTTP API (cmd/rtcapi): the subscriber's reads of
//     RTC_EVENTS and rtc_sessions, and RTC_HISTORY (ended sessions by room)
//     through ordered consumers; not rtc_rooms, not rtc.live.>. Read-only.
//   - operator is for people running rtcctl against production: everything
//     the subscriber may do, plus exactly what `rtcctl workers` and `rtcctl
//     dlq ls/show/redrive` need: look up RTC_RAW and its partition
//     consumers, watch rtc_workers, read RTC_DLQ, publish re-driven inputs
//     to rtc.raw.>, and delete a message from RTC_DLQ (from no other
//     stream); and `rtcctl reconcile`: a request to the ingest on
//     rtc.ctl.ingest.reconcile. No stream, consumer or bucket deletion, no purge, no KV
//     writes, no session events.
//
// The services and the operator use their own inbox prefix
// (natsutil.ConnConfig.InboxPrefix), so that the subscriber, which keeps the
// default _INBOX. for any NATS tool, cannot read the replies they receive
// (raw inputs, room state, dead letters).
package authz

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Account is the NATS account all rtc-sessions users belong to. JetStream is
// enabled for it; streams and buckets live in it.
const Account = "RTC"

// Names of the users.
const (
	UserIngest     = "ingest"
	UserAggregator = "aggregator"
	UserSubscriber = "subscriber"
	UserOperator   = "operator"
	UserAPI        = "api"
)

// Rules is an allow list and a deny list of subjects.
type Rules struct {
	Allow []string
	Deny  []string
}

// User is one NATS user and its permissions.
type User struct {
	Name string
	// PasswordEnv names the environment variable the server reads the
	// password from (plain text or, better, a bcrypt hash made with
	// `nats server passwd`): secrets never live in the shipped files.
	PasswordEnv string
	// InboxPrefix is the prefix the user's client must set
	// (nats.CustomInboxPrefix); "_INBOX" is the NATS default.
	InboxPrefix string
	Why         string // one line, rendered as a comment
	Publish     Rules
	Subscribe   Rules
	// AllowResponses lets the user publish the reply to a request it
	// received (nats-server allow_responses: once, to that reply subject
	// only), whatever its publish allow list says.
	AllowResponses bool
}

// ReconcileSubject is where `rtcctl reconcile` asks the ingest to
// reconcile a room (the control-plane contract, internal/ctlapi).
const ReconcileSubject = ctlapi.ReconcileSubject

const (
	jsAPI = "$JS.API."
	kvPfx = "$KV."
)

// kvStream is the stream behind a KV bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

func streamOps(ops []string, streams ...string) []string {
	var out []string
	for _, s := range streams {
		for _, op := range ops {
			out = append(out, jsAPI+"STREAM."+op+"."+s)
		}
	}
	return out
}

// directGet allows reading a stream's messages by subject (KV Get) and by
// sequence or revision (the request-body form without a subject).
func directGet(streams ...string) []string {
	var out []string
	for _, s := range streams {
		out = append(out, jsAPI+"DIRECT.GET."+s, jsAPI+"DIRECT.GET."+s+".>")
	}
	return out
}

// orderedConsumers allows what an ephemeral ordered consumer on a stream
// needs: create it (CREATE.<stream>.<name>[.<filter>]), pull from it, ask
// for its info. Deleting is not granted: an abandoned ephemeral consumer
// goes away on its own after its inactivity threshold.
func orderedConsumers(streams ...string) []string {
	var out []string
	for _, s := range streams {
		out = append(out,
			jsAPI+"CONSUMER.CREATE."+s+".>",
			jsAPI+"CONSUMER.MSG.NEXT."+s+".*",
			jsAPI+"CONSUMER.INFO."+s+".*")
	}
	return out
}

// kvWatch allows a KV watch or key listing (the push-based ordered consumer
// of nats.go's KV, with flow control replies to $JS.FC.<stream>.>).
func kvWatch(buckets ...string) []string {
	var out []string
	for _, b := range buckets {
		out = append(out, jsAPI+"CONSUMER.CREATE."+kvStream(b)+".>", "$JS.FC."+kvStream(b)+".>")
	}
	return out
}

func inbox(prefix string) string { return prefix + ".>" }

// clientExtras are grants on event streams and KV buckets' streams that
// orderedConsumers and kvWatch leave out and clients other than nats.go
// use: the consumer-create subject without a name, flow control replies of
// push consumers on the event streams, and the info of a KV watch's
// consumer.
func clientExtras(eventStreams, kvStreams []string) []string {
	var out []string
	for _, s := range eventStreams {
		out = append(out, jsAPI+"CONSUMER.CREATE."+s, "$JS.FC."+s+".>")
	}
	for _, s := range kvStreams {
		out = append(out, jsAPI+"CONSUMER.CREATE."+s, jsAPI+"CONSUMER.INFO."+s+".*")
	}
	return out
}

// neverDelete is denied to every user on top of its allow list, so that a
// later, wider allow (say $JS.API.>) still cannot delete or purge a stream
// or erase stored messages: deny wins over allow in nats-server.
var neverDelete = []string{
	jsAPI + "STREAM.DELETE.>",
	jsAPI + "STREAM.PURGE.>",
	jsAPI + "STREAM.MSG.DELETE.>",
}

// noTimers is denied to every user but the aggregator: the timers are
// message schedules in RTC_TIMERS, a stream where the server allows
// roll-ups and purges by header (it forces them with schedules), so whoever
// may publish there could cancel every room's timer or generate inputs.
// The aggregator may publish the schedule definitions (rtc.timer.*) only;
// rtc.fired.* is written by the server's scheduler alone.
var noTimers = []string{rawevent.TimerPrefix + ".>", rawevent.FiredPrefix + ".>"}

// Users returns the users of rtc-sessions with their permissions, in a
// fixed order.
func Users() []User {
	rooms, sessions, workers := rawevent.BucketRooms, events.BucketSessions, rawevent.BucketWorkers
	kvStreams := []string{kvStream(rooms), kvStream(sessions), kvStream(workers)}
	ownStreams := append([]string{rawevent.StreamRaw, events.StreamEvents, rawevent.StreamDLQ, rawevent.StreamTimers, topology.StreamHistory}, kvStreams...)

	ingest := User{
		Name: UserIngest, PasswordEnv: "RTC_NATS_INGEST_PASSWORD", InboxPrefix: "_INBOX_ingest",
		Why: "publishes raw inputs to RTC_RAW; may look it up and create it when missing (topology.EnsureRaw); reconciliation: lists the subjects of rtc_sessions' stream, answers rtcctl reconcile",
		Publish: Rules{Allow: concat(
			[]string{rawevent.RawPrefix + ".>"},
			streamOps([]string{"INFO", "CREATE"}, rawevent.StreamRaw),
			// reconciliation: the rooms with live sessions are the subjects
			// of rtc_sessions' stream (a stream info request with a subject
			// filter: no consumer, nothing to delete afterwards)
			streamOps([]string{"INFO"}, kvStream(sessions)),
			// answers to `rtcctl reconcile`, which the operator sends with
			// its own inbox prefix. Not allow_responses: nats-server lets a
			// response through to whatever reply subject the request
			// named, past the deny list, so an operator could have had the
			// ingest publish into RTC_EVENTS, RTC_DLQ or RTC_TIMERS.
			[]string{inbox("_INBOX_operator")},
		), Deny: concat(neverDelete, noTimers)},
		Subscribe: Rules{Allow: []string{inbox("_INBOX_ingest"), ReconcileSubject}},
	}

	aggregator := User{
		Name: UserAggregator, PasswordEnv: "RTC_NATS_AGGREGATOR_PASSWORD", InboxPrefix: "_INBOX_aggregator",
		Why: "owns the topology: consumes RTC_RAW, writes RTC_EVENTS, RTC_DLQ, the timers (RTC_TIMERS) and the KV buckets; never deletes or purges a stream",
		Publish: Rules{Allow: concat(
			[]string{
				events.SessionPrefix + ".>", // RTC_EVENTS
				rawevent.DLQPrefix + ".>",   // RTC_DLQ
				rawevent.TimerPrefix + ".*", // message schedules in RTC_TIMERS
				kvPfx + rooms + ".>", kvPfx + sessions + ".>", kvPfx + workers + ".>",
			},
			streamOps([]string{"INFO", "CREATE", "UPDATE"}, ownStreams...),
			directGet(kvStreams...),
			// reading a stored message by sequence: what a partition's new
			// owner left unacknowledged in RTC_RAW, KV entries when a bucket
			// has no direct get
			streamOps([]string{"MSG.GET"}, ownStreams...),
			directGet(rawevent.StreamRaw),
			[]string{
				// account info: creating a KV bucket checks the server's
				// JetStream API level with it
				jsAPI + "INFO",
				// the partition consumers of RTC_RAW: create or update, look
				// up, pull, unpin on hand-off, ack
				jsAPI + "CONSUMER.CREATE." + rawevent.StreamRaw + ".>",
				jsAPI + "CONSUMER.INFO." + rawevent.StreamRaw + ".*",
				jsAPI + "CONSUMER.MSG.NEXT." + rawevent.StreamRaw + ".*",
				jsAPI + "CONSUMER.UNPIN." + rawevent.StreamRaw + ".*",
				"$JS.ACK." + rawevent.StreamRaw + ".>",
			},
			// watching and listing its own buckets (rtc_workers heartbeats,
			// live-session counts); the ordered consumers it creates there it
			// may also delete when a watch stops
			kvWatch(rooms, sessions, workers),
			[]string{
				jsAPI + "CONSUMER.DELETE." + kvStream(rooms) + ".*",
				jsAPI + "CONSUMER.DELETE." + kvStream(sessions) + ".*",
				jsAPI + "CONSUMER.DELETE." + kvStream(workers) + ".*",
			},
			// the fired copies of the timers are the server's to write:
			// RTC_RAW takes them as the rooms' timer inputs
		), Deny: concat(neverDelete, []string{rawevent.FiredPrefix + ".>"})},
		Subscribe: Rules{Allow: []string{inbox("_INBOX_aggregator")}},
	}

	subscriber := User{
		Name: UserSubscriber, PasswordEnv: "RTC_NATS_SUBSCRIBER_PASSWORD", InboxPrefix: "_INBOX",
		Why: "read-only (rtcctl, consumers of session events): RTC_EVENTS, RTC_HISTORY, rtc.live.>, rtc_sessions, rtc_rooms",
		Publish: Rules{Allow: concat(
			streamOps([]string{"INFO"}, events.StreamEvents, kvStream(sessions), kvStream(rooms), topology.StreamHistory),
			orderedConsumers(events.StreamEvents, topology.StreamHistory),
			// watching rtc_sessions; rtc_rooms too, because a large room's
			// record is split into parts that `rtcctl room` reads with a
			// filtered watch
			kvWatch(sessions, rooms),
			directGet(kvStream(sessions), kvStream(rooms)),
			// what the NATS clients of other languages ask besides (nats.js
			// 2 and 3, nats.py, the nats CLI; docs/events.md): the account
			// info and the stream names (finding a stream by subject), the
			// consumer-create subject without a name (ephemeral consumers of
			// the older JetStream API), the info of a KV watch's consumer,
			// and flow control of push consumers on the event streams.
			// Deleting a consumer stays denied: the clients delete their
			// ordered consumers on a reset and ignore a refusal, and the
			// server removes them after their inactivity threshold.
			[]string{jsAPI + "INFO", jsAPI + "STREAM.NAMES"},
			clientExtras([]string{events.StreamEvents, topology.StreamHistory}, []string{kvStream(sessions), kvStream(rooms)}),
		), Deny: concat(neverDelete, []string{jsAPI + "CONSUMER.DELETE.>"}, noTimers)},
		Subscribe: Rules{Allow: []string{inbox("_INBOX"), events.LivePrefix + ".>"}},
	}

	// The operator: the subscriber's grants plus what rtcctl's workers and
	// dlq commands ask for (internal/rtcctl's permissions test lists them
	// and runs those commands as this user). Its own inbox prefix, because
	// its replies carry dead-lettered inputs and partition state the
	// subscriber (on the shared default _INBOX.) must not read.
	operator := User{
		Name: UserOperator, PasswordEnv: "RTC_NATS_OPERATOR_PASSWORD", InboxPrefix: "_INBOX_operator",
		Why: "people running rtcctl: the subscriber's reads plus workers (RTC_RAW's consumers, rtc_workers) and dlq ls/show/redrive; deletes messages from RTC_DLQ only",
		Publish: Rules{Allow: concat(
			subscriber.Publish.Allow,
			// rtcctl workers: the partition count from RTC_RAW's settings,
			// each agg-pNN consumer's state (info only: it may neither
			// create, pull from nor delete one), the heartbeats
			streamOps([]string{"INFO"}, rawevent.StreamRaw, kvStream(workers)),
			[]string{jsAPI + "CONSUMER.INFO." + rawevent.StreamRaw + ".*"},
			kvWatch(workers),
			// rtcctl dlq ls/show: read RTC_DLQ with its own consumer, or
			// one entry by sequence
			streamOps([]string{"INFO", "MSG.GET"}, rawevent.StreamDLQ),
			[]string{
				jsAPI + "CONSUMER.CREATE." + rawevent.StreamDLQ + ".>",
				jsAPI + "CONSUMER.MSG.NEXT." + rawevent.StreamDLQ + ".*",
			},
			// rtcctl dlq redrive: the input back to RTC_RAW, then out of
			// RTC_DLQ
			[]string{rawevent.RawPrefix + ".>"},
			streamOps([]string{"MSG.DELETE"}, rawevent.StreamDLQ),
			// rtcctl reconcile: a request to the ingest
			[]string{ReconcileSubject},
		), Deny: concat(
			// neverDelete without its MSG.DELETE.> (a deny would win over
			// the RTC_DLQ grant): deleting messages stays denied by name on
			// every other stream of rtc-sessions
			[]string{jsAPI + "STREAM.DELETE.>", jsAPI + "STREAM.PURGE.>", jsAPI + "CONSUMER.DELETE.>"},
			streamOps([]string{"MSG.DELETE"}, rawevent.StreamRaw, events.StreamEvents, rawevent.StreamTimers, topology.StreamHistory),
			streamOps([]string{"MSG.DELETE"}, kvStreams...),
			noTimers,
		)},
		Subscribe: Rules{Allow: []string{inbox("_INBOX_operator"), events.LivePrefix + ".>"}},
	}
	// The HTTP API: read-only, like the subscriber, but only what it
	// serves (session events, live sessions, the history index), with an
	// inbox of its own.
	api := User{
		Name: UserAPI, PasswordEnv: "RTC_NATS_API_PASSWORD", InboxPrefix: "_INBOX_api",
		Why: "the HTTP API (rtcapi), read-only: RTC_EVENTS and RTC_HISTORY through ordered consumers, rtc_sessions",
		Publish: Rules{Allow: concat(
			streamOps([]string{"INFO"}, events.StreamEvents, topology.StreamHistory, kvStream(sessions)),
			orderedConsumers(events.StreamEvents, topology.StreamHistory),
			kvWatch(sessions),
			directGet(kvStream(sessions)),
		), Deny: concat(neverDelete, []string{jsAPI + "CONSUMER.DELETE.>"}, noTimers)},
		Subscribe: Rules{Allow: []string{inbox("_INBOX_api")}},
	}
	return []User{ingest, aggregator, subscriber, operator, api}
}

// UserByName returns the user called name.
func UserByName(name string) (User, bool) {
	for _, u := range Users() {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// ConfPath is where the rendered nats-server configuration ships, relative
// to the repository root.
const ConfPath = "configs/nats/rtc-accounts.conf"

// RenderConf renders the account and its users in nats-server configuration
// syntax: the content of ConfPath.
func RenderConf() []byte {
	var b bytes.Buffer
	b.WriteString(`# rtc-sessions: the NATS account and its users, least privilege per service.
# GENERATED from internal/authz/authz.go by ` + "`go test ./internal/authz -update`" + `; do not edit.
# Include it from a nats-server config (see nats-server.conf here) or load it
# as is. Passwords come from the environment (plain text or a bcrypt hash from
# ` + "`nats server passwd`" + `), never from this file. docs/nats.md explains every grant.
`)
	fmt.Fprintf(&b, "accounts {\n  %s {\n    jetstream: enabled\n    users: [\n", Account)
	for _, u := range Users() {
		fmt.Fprintf(&b, "      # %s: %s\n", u.Name, u.Why)
		if u.InboxPrefix != "_INBOX" {
			fmt.Fprintf(&b, "      # its client must use the inbox prefix %s\n", u.InboxPrefix)
		}
		fmt.Fprintf(&b, "      {\n        user: %s\n        password: $%s\n        permissions: {\n", u.Name, u.PasswordEnv)
		writeRules(&b, "publish", u.Publish)
		writeRules(&b, "subscribe", u.Subscribe)
		if u.AllowResponses {
			b.WriteString("          allow_responses: true\n")
		}
		b.WriteString("        }\n      }\n")
	}
	b.WriteString("    ]\n  }\n}\n")
	return b.Bytes()
}

func writeRules(b *bytes.Buffer, name string, r Rules) {
	fmt.Fprintf(b, "          %s: {\n", name)
	for _, kind := range []struct {
		key  string
		subs []string
	}{{"allow", r.Allow}, {"deny", r.Deny}} {
		if len(kind.subs) == 0 {
			continue
		}
		fmt.Fprintf(b, "            %s: [\n", kind.key)
		for _, s := range kind.subs {
			fmt.Fprintf(b, "              %q\n", s)
		}
		b.WriteString("            ]\n")
	}
	b.WriteString("          }\n")
}

// HelmAccounts is the value config.merge.accounts must have in the Helm
// values: the same account and users, with each password taken from the
// environment by the chart's << $VAR >> (unquoted) syntax.
func HelmAccounts() map[string]any {
	var users []any
	for _, u := range Users() {
		perms := map[string]any{}
		for key, r := range map[string]Rules{"publish": u.Publish, "subscribe": u.Subscribe} {
			m := map[string]any{}
			if len(r.Allow) > 0 {
				m["allow"] = toAny(r.Allow)
			}
			if len(r.Deny) > 0 {
				m["deny"] = toAny(r.Deny)
			}
			perms[key] = m
		}
		if u.AllowResponses {
			perms["allow_responses"] = true
		}
		users = append(users, map[string]any{
			"user":        u.Name,
			"password":    "<< $" + u.PasswordEnv + " >>",
			"permissions": perms,
		})
	}
	return map[string]any{Account: map[string]any{"jetstream": "enabled", "users": users}}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// Markers around the generated users in the Helm values.
const (
	HelmValuesPath  = "deploy/k8s/nats-values.yaml"
	HelmBeginMarker = "        # BEGIN users generated by `go test ./internal/authz -update`\n"
	HelmEndMarker   = "        # END users\n"
)

// RenderHelmUsers renders the users as the YAML list that goes between the
// markers under config.merge.accounts.RTC.users in the Helm values.
func RenderHelmUsers() []byte {
	var b bytes.Buffer
	for _, u := range Users() {
		fmt.Fprintf(&b, "        # %s: %s\n", u.Name, u.Why)
		fmt.Fprintf(&b, "        - user: %s\n          password: << $%s >>\n          permissions:\n", u.Name, u.PasswordEnv)
		for _, r := range []struct {
			key   string
			rules Rules
		}{{"publish", u.Publish}, {"subscribe", u.Subscribe}} {
			fmt.Fprintf(&b, "            %s:\n", r.key)
			for _, kind := range []struct {
				key  string
				subs []string
			}{{"allow", r.rules.Allow}, {"deny", r.rules.Deny}} {
				if len(kind.subs) == 0 {
					continue
				}
				fmt.Fprintf(&b, "              %s:\n", kind.key)
				for _, s := range kind.subs {
					fmt.Fprintf(&b, "                - %q\n", s)
				}
			}
		}
		if u.AllowResponses {
			b.WriteString("            allow_responses: true\n")
		}
	}
	return b.Bytes()
}

// HelmMergeToConf turns the chart's config.merge value into nats-server
// configuration text the way the chart does: JSON, with "<< x >>" strings
// emitted unquoted as x. Tests load the result with the real server parser.
func HelmMergeToConf(jsonText string) string {
	var out strings.Builder
	rest := jsonText
	for {
		i := strings.Index(rest, `"<<`)
		if i < 0 {
			break
		}
		j := strings.Index(rest[i+3:], `>>"`)
		if j < 0 {
			break
		}
		out.WriteString(rest[:i])
		out.WriteString(strings.TrimSpace(rest[i+3 : i+3+j]))
		rest = rest[i+3+j+3:]
	}
	out.WriteString(rest)
	return out.String()
}
