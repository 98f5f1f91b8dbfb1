package pipelinetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// recorder is a testing.TB that keeps what is reported instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

// room builds a room's stored events from (stream seq, seq) pairs.
func room(r id.RoomID, pairs ...[2]uint64) []gotEvent {
	var out []gotEvent
	for _, p := range pairs {
		out = append(out, gotEvent{seq: p[0], ev: events.SessionEvent{RoomID: r, Seq: p[1], Kind: "member_joined"}})
	}
	return out
}

func TestCheckRoomOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		got      map[id.RoomID][]gotEvent
		wantBad  int
		wantText []string
	}{
		{"in order, rooms interleaved", map[id.RoomID][]gotEvent{
			"!a": room("!a", [2]uint64{1, 1}, [2]uint64{3, 2}, [2]uint64{4, 3}),
			"!b": room("!b", [2]uint64{2, 1}, [2]uint64{5, 2}),
		}, 0, nil},
		{"an earlier seq stored after a later one", map[id.RoomID][]gotEvent{
			"!a": room("!a", [2]uint64{1, 1}, [2]uint64{1693, 3}, [2]uint64{1694, 2}),
			"!b": room("!b", [2]uint64{2, 1}),
		}, 1, []string{"room !a", "stream seq 1693 has seq 3", "stream seq 1694 has seq 2"}},
		{"a gap", map[id.RoomID][]gotEvent{"!a": room("!a", [2]uint64{1, 1}, [2]uint64{2, 3})}, 1,
			[]string{"stream seq 1 has seq 1", "stream seq 2 has seq 3"}},
		{"a repeat", map[id.RoomID][]gotEvent{"!a": room("!a", [2]uint64{1, 1}, [2]uint64{2, 1})}, 1, nil},
		{"not starting at 1", map[id.RoomID][]gotEvent{"!a": room("!a", [2]uint64{7, 2})}, 1,
			[]string{"first event (stream seq 7) has seq 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			v := &Verifier{T: r}
			if bad := v.checkRoomOrder(tc.got); bad != tc.wantBad {
				t.Errorf("%d rooms reported, want %d: %v", bad, tc.wantBad, r.errs)
			}
			if (len(r.errs) > 0) != (tc.wantBad > 0) {
				t.Errorf("errors %v, want them only for a bad room", r.errs)
			}
			all := strings.Join(r.errs, "\n")
			for _, s := range tc.wantText {
				if !strings.Contains(all, s) {
					t.Errorf("report %q lacks %q", all, s)
				}
			}
		})
	}
}

func TestStallFigures(t *testing.T) {
	at := time.Unix(1000, 0)
	s := func(d time.Duration) time.Time { return at.Add(d) }
	v := &Verifier{eventsStored: []time.Time{s(-time.Second), s(2 * time.Second), s(3 * time.Second), s(9 * time.Second)}}
	if d, ok := v.FirstStoredAfter(events.StreamEvents, at); !ok || d != 2*time.Second {
		t.Errorf("FirstStoredAfter = %s, %v; want 2s", d, ok)
	}
	if _, ok := v.FirstStoredAfter(rawevent.StreamRaw, at); ok {
		t.Error("FirstStoredAfter of an empty stream found something")
	}
	for _, tc := range []struct {
		within, want time.Duration
	}{
		{15 * time.Second, 6 * time.Second}, // 3s -> 9s
		{5 * time.Second, 2 * time.Second},  // at -> 2s, then 3s -> the window's end
		{12 * time.Second, 6 * time.Second}, // 9s -> 12s is shorter
		{20 * time.Second, 11 * time.Second},
	} {
		if got := v.LongestGap(events.StreamEvents, at, tc.within); got != tc.want {
			t.Errorf("LongestGap within %s = %s, want %s", tc.within, got, tc.want)
		}
	}
}
