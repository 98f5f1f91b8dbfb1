package rtc

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// roomWithMembers returns a room with n members in one call, and n update
// inputs (one per member, each refreshing the expiry).
func roomWithMembers(tb testing.TB, roomID id.RoomID, n int) (*RoomState, [2][]rawevent.RawEvent) {
	st := NewRoomState(roomID)
	var updates [2][]rawevent.RawEvent
	updates[0], updates[1] = make([]rawevent.RawEvent, n), make([]rawevent.RawEvent, n)
	for i := 0; i < n; i++ {
		u := fmt.Sprintf("@user%d:example.org", i)
		j := callJoin(u, "DEV", "", T0+int64(i), `,"expires":28800000`)
		j.RoomID = roomID
		if res := Apply(DefaultConfig(), st, &j); len(res.Events) == 0 {
			tb.Fatalf("member %d did not join: %v", i, res.Rejections)
		}
		// Two refreshes per member with different expiries, used by turns,
		// so that every update changes the member.
		for k := range updates {
			updates[k][i] = callJoin(u, "DEV", "", T0+hour+int64(i), fmt.Sprintf(`,"created_ts":%d,"expires":%d`, T0+int64(i), int64(9+k)*hour))
			updates[k][i].RoomID = roomID
		}
	}
	return st, updates
}

// BenchmarkApplyLargeRoom: one update in a room of 1,000 members (baseline:
// a room of 10, measured in the same run).
func BenchmarkApplyLargeRoom(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			st, updates := roomWithMembers(b, room, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				u := updates[(i/n)%2][i%n]
				// Every pass over the members must be newer than the last.
				u.OriginServerTS += int64(i/n) * 10
				u.ReceivedAt = u.OriginServerTS
				u.EventID = id.EventID(fmt.Sprint(i))
				Apply(DefaultConfig(), st, &u)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkApplyManyRooms: joins, updates and leaves spread over 100,000 rooms.
func BenchmarkApplyManyRooms(b *testing.B) {
	const rooms = 100_000
	states := make([]*RoomState, rooms)
	ids := make([]id.RoomID, rooms)
	for i := range states {
		ids[i] = id.RoomID(fmt.Sprintf("!r%d:example.org", i))
		states[i] = NewRoomState(ids[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := i % rooms
		round := int64(i / rooms)
		var in rawevent.RawEvent
		switch round % 3 {
		case 0:
			in = callJoin(alice, "A", "", T0+round*1000, "")
		case 1:
			in = callJoin(alice, "A", "", T0+round*1000, fmt.Sprintf(`,"created_ts":%d,"expires":%d`, T0+(round-1)*1000, 8*hour))
		default:
			in = callLeave(alice, "A", T0+round*1000)
		}
		in.RoomID = ids[r]
		in.EventID = id.EventID(fmt.Sprint(i))
		Apply(DefaultConfig(), states[r], &in)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestLargeRoomStepAllocations: one reducer step costs the same number of
// allocations in a room of 1,000 members as in a room of 10, i.e. not
// O(members). Allocation counts are exact, unlike timings.
func TestLargeRoomStepAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 1,000-member room")
	}
	allocs := func(n int) float64 {
		st, updates := roomWithMembers(t, room, n)
		i := 0
		return testing.AllocsPerRun(200, func() {
			u := updates[(i/n)%2][i%n]
			u.OriginServerTS += int64(i) * 10
			u.ReceivedAt = u.OriginServerTS
			u.EventID = id.EventID(fmt.Sprint("$", i))
			i++
			if res := Apply(DefaultConfig(), st, &u); len(res.Events) != 1 {
				t.Fatalf("want one member_updated, got %v", kinds(res.Events))
			}
		})
	}
	small, large := allocs(10), allocs(1000)
	t.Logf("allocations per step: 10 members %.1f, 1000 members %.1f", small, large)
	if large > small+5 {
		t.Fatalf("a step in a 1,000-member room costs %.1f allocations, in a 10-member room %.1f: O(members)", large, small)
	}
}

// BenchmarkApplyStep: one reducer step (a member's refresh, as in
// BenchmarkApplyLargeRoom, but with event ids built ahead so that only the
// input's fields are set per step) in a room of 10, 1,000 and 10,000
// members; the larger rooms report their cost relative to the 10-member
// room measured in the same run (the target: at most 3x at 10,000), in wall
// time and in process CPU time (which a loaded machine distorts less).
func BenchmarkApplyStep(b *testing.B) {
	perStep, cpuPerStep := map[int]float64{}, map[int]float64{}
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			st, updates := roomWithMembers(b, room, n)
			// n+1 ids: a member's next update never has the id of its last.
			ids := make([]id.EventID, n+1)
			for i := range ids {
				ids[i] = id.EventID(fmt.Sprint("$step", i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			for i := 0; i < b.N; i++ {
				u := updates[(i/n)%2][i%n]
				u.OriginServerTS += int64(i/n) * 10
				u.ReceivedAt = u.OriginServerTS
				u.EventID = ids[i%(n+1)]
				if res := Apply(DefaultConfig(), st, &u); len(res.Events) != 1 {
					b.Fatalf("step %d: want one member_updated, got %v", i, kinds(res.Events))
				}
			}
			perStep[n] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			cpuPerStep[n] = float64(processCPU()-cpu) / float64(b.N)
			b.ReportMetric(cpuPerStep[n], "cpu-ns/op")
			if base, ok := perStep[10]; ok && n > 10 {
				b.ReportMetric(perStep[n]/base, "x-10-member-step")
				if cpuPerStep[10] > 0 {
					b.ReportMetric(cpuPerStep[n]/cpuPerStep[10], "x-10-member-cpu")
				}
			}
		})
	}
}

// TestApplyStepAllocationBound: one step of BenchmarkApplyLargeRoom in a
// room of 1,000 members, input construction included exactly as there,
// costs at most 20 allocations (the target; 118 before the fast path).
func TestApplyStepAllocationBound(t *testing.T) {
	const n = 1000
	st, updates := roomWithMembers(t, room, n)
	i := 0
	allocs := testing.AllocsPerRun(500, func() {
		u := updates[(i/n)%2][i%n]
		u.OriginServerTS += int64(i/n) * 10
		u.ReceivedAt = u.OriginServerTS
		u.EventID = id.EventID(fmt.Sprint(i))
		i++
		if res := Apply(DefaultConfig(), st, &u); len(res.Events) != 1 {
			t.Fatalf("want one member_updated, got %v", kinds(res.Events))
		}
	})
	t.Logf("allocations per step in a %d-member room: %.1f", n, allocs)
	if allocs > 20 {
		t.Fatalf("a step costs %.1f allocations, bound 20", allocs)
	}
}

// BenchmarkParseStateMember: the session form's parser on Element Call's
// join content, alone (a join) and replacing a register holding the same
// claim (a refresh, reusing its strings).
func BenchmarkParseStateMember(b *testing.B) {
	j := callJoin(alice, "ALICEDEV", "", T0, `,"created_ts":1767225600000,"expires":14400000,"m.call.intent":"video"`)
	p, err := ParseStateMember(DefaultConfig(), &j)
	if err != nil || len(p.Claims) != 1 {
		b.Fatalf("%v %+v", err, p)
	}
	for _, tc := range []struct {
		name string
		prev *Register
	}{{"join", nil}, {"refresh", &Register{Kind: RegisterJoin, Claims: p.Claims}}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := parseStateMember(DefaultConfig(), &j, tc.prev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
