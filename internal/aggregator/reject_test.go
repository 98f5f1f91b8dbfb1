package aggregator

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// TestRejectionsVisible: a membership that does not count is counted by
// its reason and logged with its room, event id and reason, so an operator
// can find out why someone is missing from a call. Every reason's counter
// exists (at 0) before the first rejection.
func TestRejectionsVisible(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zapcore.InfoLevel)
	e.log = zap.New(zapcore.NewTee(e.log.Core(), core))
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)
	for _, c := range rtc.RejectionCodes() {
		if n := testutil.ToFloat64(w.w.m.Rejections.WithLabelValues(string(c))); n != 0 {
			t.Fatalf("rejections_total{reason=%s} = %v before any input", c, n)
		}
	}
	room := id.RoomID("!reject:" + testHS)
	now := time.Now().UnixMilli()
	alice, mallory := id.UserID("@alice:"+testHS), id.UserID("@mallory:"+testHS)
	hostile := joinEv(room, alice, "ALICE", now, 0, "$hostile")
	hostile.Sender = mallory // Mallory writes Alice's state key
	malformed := callMember(room, alice, "A2", now+1, "$malformed", `{"application":"m.call","call_id":"","device_id":7}`)
	huge := callMember(room, alice, "A3", now+2, "$huge",
		`{"application":"m.call","call_id":"","scope":"m.room","device_id":"A3","expires":1e30}`)
	inputs := []rawevent.RawEvent{hostile, malformed, huge, joinEv(room, alice, "A4", now+3, 0, "$ok")}
	e.publish(inputs)
	e.waitIdle(countEvents(offline(inputs)), 30*time.Second)

	for code, want := range map[rtc.RejectionCode]float64{rtc.RejectForeignStateKey: 1, rtc.RejectMalformed: 1, rtc.RejectOutOfRange: 1} {
		if n := testutil.ToFloat64(w.w.m.Rejections.WithLabelValues(string(code))); n != want {
			t.Errorf("rejections_total{reason=%s} = %v, want %v", code, n, want)
		}
	}
	logged := map[string]string{}
	for _, entry := range logs.FilterMessage("membership rejected").All() {
		f := entry.ContextMap()
		if f["room"] != string(room) {
			t.Errorf("rejection logged without its room: %v", f)
		}
		logged[f["event_id"].(string)] = f["reason"].(string)
	}
	for ev, code := range map[string]rtc.RejectionCode{"$hostile": rtc.RejectForeignStateKey, "$malformed": rtc.RejectMalformed, "$huge": rtc.RejectOutOfRange} {
		if logged[ev] != string(code) {
			t.Errorf("event %s logged with reason %q, want %q (logged: %v)", ev, logged[ev], code, logged)
		}
	}
}
