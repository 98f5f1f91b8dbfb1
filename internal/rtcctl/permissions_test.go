package rtcctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natstest"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// operatorExtras are the grants docs/rtcctl.md lists for workers and dlq
// beyond the subscriber's (keep the two in step).
var operatorExtras = []string{
	// workers
	"$JS.API.STREAM.INFO.RTC_RAW", "$JS.API.CONSUMER.INFO.RTC_RAW.*",
	"$JS.API.STREAM.INFO.KV_rtc_workers", "$JS.API.CONSUMER.CREATE.KV_rtc_workers.>", "$JS.FC.KV_rtc_workers.>",
	// dlq ls, show
	"$JS.API.STREAM.INFO.RTC_DLQ", "$JS.API.CONSUMER.CREATE.RTC_DLQ.>", "$JS.API.CONSUMER.MSG.NEXT.RTC_DLQ.*",
	"$JS.API.STREAM.MSG.GET.RTC_DLQ",
	// dlq redrive
	events.RawPrefix + ".>", "$JS.API.STREAM.MSG.DELETE.RTC_DLQ",
}

func permissions(pubAllow, pubDeny, subAllow []string) string {
	q := func(v []string) string { // JSON strings, without \u escapes nats-server cannot read
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		return strings.TrimSpace(b.String())
	}
	return fmt.Sprintf("{publish: {allow: %s, deny: %s}, subscribe: {allow: %s}}", q(pubAllow), q(pubDeny), q(subAllow))
}

// TestPermissions runs rtcctl as the shipped subscriber user (its exact
// permissions from internal/authz) and as a user with the documented extra
// grants: the subscriber reads sessions, events, history and rooms and is
// refused workers and the DLQ; with the extras every command works.
func TestPermissions(t *testing.T) {
	sub, ok := authz.UserByName(authz.UserSubscriber)
	if !ok {
		t.Fatal("no subscriber user")
	}
	opsDeny := []string{"$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>"}
	conf := natstest.WriteFile(t, t.TempDir(), "server.conf", fmt.Appendf(nil, `
jetstream: enabled
accounts { RTC { jetstream: enabled, users: [
  {user: admin, password: admin-pw},
  {user: subscriber, password: sub-pw, permissions: %s},
  {user: ops, password: ops-pw, permissions: %s}
] } }
`, permissions(sub.Publish.Allow, sub.Publish.Deny, sub.Subscribe.Allow),
		permissions(append(append([]string{}, sub.Publish.Allow...), operatorExtras...), opsDeny, sub.Subscribe.Allow)))
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, t.TempDir(), true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(ns.Shutdown)
	url := ns.ClientURL()

	nc, err := nats.Connect(url, nats.UserInfo("admin", "admin-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	tc := topology.DefaultConfig()
	tc.Partitions = 2
	if _, err := topology.Ensure(context.Background(), js, tc, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	publish(t, js, sessionEvent(roomA, 1, events.KindSessionStarted, ""), ended(roomA, "m.call", "", 2, 1700000000000, 1000, 1, 1, 1))
	putHeartbeat(t, js, "agg-1", nil)
	in, _ := events.EncodeRaw(rawEvent(string(roomA), 1))
	tokA := events.Token(string(roomA))
	pA := events.Partition(tokA, 2)
	seq := deadLetter(t, js, pA, "apply", "boom", 1, events.PartitionSubject(pA, tokA), in)

	type step struct {
		args []string
		want string // in stdout
	}
	readOnly := []step{
		{[]string{"sessions"}, "no live sessions"},
		{[]string{"tail", "--all", "--max", "2"}, "session_ended"},
		{[]string{"history", "--room", string(roomA)}, "1s"},
	}
	operator := []step{
		{[]string{"workers"}, "workers (1 live)"},
		{[]string{"dlq", "ls"}, "boom"},
		{[]string{"dlq", "show", strconv.FormatUint(seq, 10)}, "Rtc-Dlq-Reason: apply"},
		{[]string{"dlq", "redrive", "--dry-run", "--all"}, "would re-drive"},
		{[]string{"dlq", "redrive", strconv.FormatUint(seq, 10)}, "1 re-driven"},
	}
	asUser := func(user, pw string, s step) (int, string, string) {
		return run(t, append(s.args, "-s", url, "--user", user, "--password", pw, "--timeout", "1s")...)
	}
	for _, s := range readOnly {
		if code, out, errs := asUser("subscriber", "sub-pw", s); code != 0 || !strings.Contains(out, s.want) {
			t.Errorf("subscriber %v: exit %d\n%s%s", s.args, code, out, errs)
		}
	}
	for _, s := range operator[:3] {
		if code, _, errs := asUser("subscriber", "sub-pw", s); code != 1 {
			t.Errorf("subscriber %v: exit %d, want a refusal: %s", s.args, code, errs)
		}
	}
	// (sessions is left out here: as for the subscriber, pkg/events stops
	// its KV watch with a consumer delete the user may not make, and waits
	// 5 s for the answer.)
	for _, s := range append(readOnly[1:], operator...) {
		if code, out, errs := asUser("ops", "ops-pw", s); code != 0 || !strings.Contains(out, s.want) {
			t.Errorf("ops %v: exit %d\n%s%s", s.args, code, out, errs)
		}
	}
}
