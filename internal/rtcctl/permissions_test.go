package rtcctl

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// operatorExtras are the grants docs/rtcctl.md lists for workers and dlq
// beyond the subscriber's (keep the two in step): exactly what the shipped
// operator user has on top of the subscriber's publish permissions.
var operatorExtras = []string{
	// workers
	"$JS.API.STREAM.INFO.RTC_RAW", "$JS.API.CONSUMER.INFO.RTC_RAW.*",
	"$JS.API.STREAM.INFO.KV_rtc_workers", "$JS.API.CONSUMER.CREATE.KV_rtc_workers.>", "$JS.FC.KV_rtc_workers.>",
	// dlq ls, show
	"$JS.API.STREAM.INFO.RTC_DLQ", "$JS.API.CONSUMER.CREATE.RTC_DLQ.>", "$JS.API.CONSUMER.MSG.NEXT.RTC_DLQ.*",
	"$JS.API.STREAM.MSG.GET.RTC_DLQ",
	// dlq redrive
	rawevent.RawPrefix + ".>", "$JS.API.STREAM.MSG.DELETE.RTC_DLQ",
	// reconcile: a request to the ingest
	authz.ReconcileSubject,
}

// TestOperatorIsSubscriberPlusExtras: the shipped operator's publish allow
// list is the subscriber's plus operatorExtras, nothing more.
func TestOperatorIsSubscriberPlusExtras(t *testing.T) {
	sub, ok := authz.UserByName(authz.UserSubscriber)
	op, ok2 := authz.UserByName(authz.UserOperator)
	if !ok || !ok2 {
		t.Fatal("no shipped subscriber or operator user")
	}
	want := append(append([]string{}, sub.Publish.Allow...), operatorExtras...)
	slices.Sort(want)
	got := append([]string{}, op.Publish.Allow...)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("operator publish allow:\n got %q\nwant the subscriber's plus operatorExtras: %q", got, want)
	}
}

// TestPermissions runs rtcctl against a server with exactly the shipped
// users (configs/nats/rtc-accounts.conf, through internal/authz/authztest):
// the subscriber reads sessions, events and history and is refused workers
// and the DLQ; the operator, with its own inbox prefix, runs every command.
func TestPermissions(t *testing.T) {
	srv := authztest.Start(t)
	url := srv.NS.ClientURL()
	password := func(user string) string {
		b, err := os.ReadFile(srv.PasswordFiles[user])
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}

	// The aggregator's user creates the topology and writes what the
	// commands read, as the aggregator would.
	js := srv.Connect(t, authz.UserAggregator).JS
	tc := topology.DefaultConfig()
	tc.Partitions = 2
	if _, err := topology.Ensure(context.Background(), js, tc, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	publish(t, js, sessionEvent(roomA, 1, events.KindSessionStarted, ""), ended(roomA, "m.call", "", 2, 1700000000000, 1000, 1, 1, 1))
	putHeartbeat(t, js, "agg-1", nil)
	in, _ := rawevent.EncodeRaw(rawEvent(string(roomA), 1))
	tokA := events.Token(string(roomA))
	pA := rawevent.Partition(tokA, 2)
	seq := deadLetter(t, js, pA, "apply", "boom", 1, rawevent.PartitionSubject(pA, tokA), in)

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
	asUser := func(user string, s step, extra ...string) (int, string, string) {
		args := append(append([]string{}, s.args...), "-s", url, "--user", user, "--password", password(user))
		return run(t, append(args, extra...)...)
	}
	asOperator := func(s step) (int, string, string) {
		return asUser(authz.UserOperator, s, "--inbox-prefix", "_INBOX_operator", "--timeout", "5s")
	}
	for _, s := range readOnly {
		if code, out, errs := asUser(authz.UserSubscriber, s, "--timeout", "5s"); code != 0 || !strings.Contains(out, s.want) {
			t.Errorf("subscriber %v: exit %d\n%s%s", s.args, code, out, errs)
		}
	}
	// A refusal ends the command at once (well within --timeout) with
	// the subject, the user and a hint, not a raw server line.
	refused := func(who string, s step, wantErr []string, extra ...string) {
		t.Helper()
		start := time.Now()
		code, _, errs := asUser(who, s, append([]string{"--timeout", "5s"}, extra...)...)
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s %v: refused after %s, want at once", who, s.args, took)
		}
		if code != 1 || strings.Contains(errs, "Permissions Violation") {
			t.Errorf("%s %v: exit %d, want 1 and no raw server line: %s", who, s.args, code, errs)
		}
		for _, w := range wantErr {
			if !strings.Contains(errs, w) {
				t.Errorf("%s %v: stderr lacks %q:\n%s", who, s.args, w, errs)
			}
		}
	}
	needsOperator := "hint: this command needs the operator user"
	refused(authz.UserSubscriber, operator[0], []string{`user "subscriber" may not publish to $JS.API.STREAM.INFO.RTC_RAW`, needsOperator})
	refused(authz.UserSubscriber, operator[1], []string{`user "subscriber" may not publish to $JS.API.CONSUMER.CREATE.RTC_DLQ.`, needsOperator})
	refused(authz.UserSubscriber, operator[2], []string{`user "subscriber" may not publish to $JS.API.STREAM.INFO.RTC_DLQ`, needsOperator})
	// Without its inbox prefix the operator gets no replies: it may not
	// subscribe to the default inbox (_INBOX.<id>.*).
	refused(authz.UserOperator, operator[0], []string{`user "operator" may not subscribe to _INBOX.`, "--inbox-prefix"})
	// sessions too: its KV watch ends with a consumer delete neither user
	// may make, which is no failure (the server removes the consumer).
	for _, s := range append(readOnly, operator...) {
		if code, out, errs := asOperator(s); code != 0 || !strings.Contains(out, s.want) {
			t.Errorf("operator %v: exit %d\n%s%s", s.args, code, out, errs)
		}
	}
	// reconcile: the operator's request reaches the ingest's user, whose
	// answer comes back (allow_responses); the subscriber may not ask.
	ing := srv.Connect(t, authz.UserIngest)
	reply, _ := json.Marshal(ctlapi.ReconcileReply{RoomID: roomA, Attempts: []ctlapi.ReconcileResult{{Homeserver: "hs1", Events: 3, Stored: 1, Duplicates: 2}}})
	sub, err := ing.NC.QueueSubscribe(ctlapi.ReconcileSubject, ctlapi.ReconcileQueue, func(m *nats.Msg) { _ = m.Respond(reply) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := ing.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	rec := step{[]string{"reconcile", string(roomA)}, "reconciled from hs1: 3 state events, 1 new in RTC_RAW"}
	if code, out, errs := asOperator(rec); code != 0 || !strings.Contains(out, rec.want) {
		t.Errorf("operator %v: exit %d\n%s%s", rec.args, code, out, errs)
	}
	refused(authz.UserSubscriber, rec, []string{`user "subscriber" may not publish to ` + ctlapi.ReconcileSubject, needsOperator})
	if v := ing.Violations(); len(v) != 0 {
		t.Errorf("the ingest's answer was refused: %q", v)
	}
	// The re-drive moved the entry: RTC_DLQ no longer lists it.
	if code, out, errs := asOperator(operator[1]); code != 0 || strings.Contains(out, "boom") {
		t.Errorf("operator dlq ls after the re-drive: exit %d\n%s%s", code, out, errs)
	}
}
