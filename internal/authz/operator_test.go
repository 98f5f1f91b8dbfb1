package authz

import (
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// allows says whether rules let a client publish (or subscribe) to subject
// as nats-server decides it: some allow matches and no deny does.
func allows(r Rules, subject string) bool {
	match := func(filters []string) bool {
		return slices.ContainsFunc(filters, func(f string) bool { return server.SubjectMatchesFilter(subject, f) })
	}
	return match(r.Allow) && !match(r.Deny)
}

func mustUser(t *testing.T, name string) User {
	t.Helper()
	u, ok := UserByName(name)
	if !ok {
		t.Fatalf("no user %s", name)
	}
	return u
}

// shippedStreams are the streams the aggregator may create: every stream
// and bucket of rtc-sessions.
func shippedStreams(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, s := range mustUser(t, UserAggregator).Publish.Allow {
		if name, ok := strings.CutPrefix(s, jsAPI+"STREAM.CREATE."); ok {
			out = append(out, name)
		}
	}
	if len(out) < 6 {
		t.Fatalf("the aggregator creates only %q", out)
	}
	return out
}

// TestOperatorGrants: the operator may do everything the subscriber may
// (through its own inbox), and besides only rtcctl's workers and dlq
// requests (the exact list is in internal/rtcctl's permissions test, which
// runs those commands as this user); it may delete messages from RTC_DLQ
// only, and its denials hold even under a later allow of everything.
func TestOperatorGrants(t *testing.T) {
	sub, op := mustUser(t, UserSubscriber), mustUser(t, UserOperator)
	for _, s := range sub.Publish.Allow {
		if !allows(op.Publish, s) {
			t.Errorf("operator may not publish %q, which the subscriber may", s)
		}
	}
	if op.InboxPrefix == sub.InboxPrefix || op.InboxPrefix == "" {
		t.Errorf("operator inbox prefix %q: want its own, not the subscriber's %q", op.InboxPrefix, sub.InboxPrefix)
	}
	wantSub := []string{op.InboxPrefix + ".>", events.LivePrefix + ".>"}
	if !slices.Equal(sorted(op.Subscribe.Allow), sorted(wantSub)) {
		t.Errorf("operator subscribe allow %q, want %q", op.Subscribe.Allow, wantSub)
	}

	// A later, wider allow must not reopen what the deny list closes.
	wide := Rules{Allow: append([]string{"$JS.API.>", "$KV.>", "rtc.>"}, op.Publish.Allow...), Deny: op.Publish.Deny}
	tests := []struct {
		subject string
		want    bool // may the operator publish it
		// deniedAlways: refused even with the wider allow list
		deniedAlways bool
	}{
		// rtcctl workers
		{jsAPI + "STREAM.INFO." + rawevent.StreamRaw, true, false},
		{jsAPI + "CONSUMER.INFO." + rawevent.StreamRaw + ".agg-p00", true, false},
		{jsAPI + "CONSUMER.CREATE.KV_" + rawevent.BucketWorkers + ".w1.$KV.rtc_workers.>", true, false},
		// rtcctl dlq ls, show, redrive
		{jsAPI + "CONSUMER.CREATE." + rawevent.StreamDLQ + ".c1.rtc.dlq.>", true, false},
		{jsAPI + "CONSUMER.MSG.NEXT." + rawevent.StreamDLQ + ".c1", true, false},
		{jsAPI + "STREAM.MSG.GET." + rawevent.StreamDLQ, true, false},
		{rawevent.RawPrefix + ".IXJvb206ZXhhbXBsZS5vcmc", true, false},
		{jsAPI + "STREAM.MSG.DELETE." + rawevent.StreamDLQ, true, false},
		// nothing more
		{jsAPI + "STREAM.DELETE." + rawevent.StreamDLQ, false, true},
		{jsAPI + "STREAM.PURGE." + rawevent.StreamDLQ, false, true},
		{jsAPI + "STREAM.PURGE.KV_" + rawevent.BucketRooms, false, true},
		{jsAPI + "CONSUMER.DELETE." + rawevent.StreamRaw + ".agg-p00", false, true},
		{jsAPI + "CONSUMER.DELETE." + rawevent.StreamDLQ + ".c1", false, true},
		{jsAPI + "STREAM.UPDATE." + rawevent.StreamRaw, false, false},
		{jsAPI + "STREAM.CREATE." + rawevent.StreamDLQ, false, false},
		{jsAPI + "CONSUMER.CREATE." + rawevent.StreamRaw + ".c1", false, false},
		{jsAPI + "CONSUMER.MSG.NEXT." + rawevent.StreamRaw + ".agg-p00", false, false},
		{jsAPI + "CONSUMER.UNPIN." + rawevent.StreamRaw + ".agg-p00", false, false},
		{"$KV." + rawevent.BucketRooms + ".k", false, false},
		{"$KV." + events.BucketSessions + ".k", false, false},
		{"$KV." + rawevent.BucketWorkers + ".k", false, false},
		{events.SessionPrefix + ".a.r.c.session_ended", false, false},
		{rawevent.DLQPrefix + ".0", false, false},
		{rawevent.TimerPrefix + ".r", false, false},
		{rawevent.PartPrefix + ".0.r", false, false},
	}
	// Deleting a message is denied by name on every other stream.
	for _, s := range shippedStreams(t) {
		if s != rawevent.StreamDLQ {
			tests = append(tests, struct {
				subject            string
				want, deniedAlways bool
			}{jsAPI + "STREAM.MSG.DELETE." + s, false, true})
		}
	}
	for _, tc := range tests {
		if got := allows(op.Publish, tc.subject); got != tc.want {
			t.Errorf("operator may publish %s: %v, want %v", tc.subject, got, tc.want)
		}
		if tc.deniedAlways && allows(wide, tc.subject) {
			t.Errorf("operator: %s is not denied: a wider allow would grant it", tc.subject)
		}
	}

	// The other users keep their deny of every message delete, RTC_DLQ's
	// included.
	for _, u := range Users() {
		if u.Name != UserOperator && !slices.Contains(u.Publish.Deny, jsAPI+"STREAM.MSG.DELETE.>") {
			t.Errorf("user %s: no deny of %sSTREAM.MSG.DELETE.>", u.Name, jsAPI)
		}
	}
}
