package history_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/api/history"
	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func setup(t *testing.T, withIndex bool) (context.Context, jetstream.JetStream) {
	t.Helper()
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: t.TempDir(), Port: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); ns.Shutdown() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cfgs := []jetstream.StreamConfig{topology.EventsStream(topology.DefaultConfig())}
	if withIndex {
		cfgs = append(cfgs, topology.HistoryStream(topology.DefaultConfig()))
	}
	for _, c := range cfgs {
		if _, err := js.CreateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	return ctx, js
}

func publishEnded(ctx context.Context, t *testing.T, js jetstream.JetStream, room id.RoomID, app string, seq uint64) {
	t.Helper()
	ev := events.SessionEvent{V: events.SchemaVersion, ID: eventcodec.EventID(room, seq), Seq: seq, Kind: events.KindSessionEnded,
		SessionID: fmt.Sprintf("%s-%d", room, seq), RoomID: room, Application: app, At: int64(seq),
		Summary: &events.Summary{EndedAt: int64(seq)}}
	b, err := wire.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, ev.Subject(), b); err != nil {
		t.Fatal(err)
	}
}

// TestReadPages: every page is newest first, pages do not overlap and
// together hold every match; every room (the window read from the cursor
// down) and one room (the filtered read) page alike.
func TestReadPages(t *testing.T) {
	ctx, js := setup(t, true)
	a, b := id.RoomID("!a:hs"), id.RoomID("!b:hs")
	for i := uint64(1); i <= 7; i++ {
		publishEnded(ctx, t, js, a, "m.call", i)
		if i%2 == 0 {
			publishEnded(ctx, t, js, b, "io.game", i)
		}
	}
	if ok, err := history.CaughtUp(ctx, js, history.Query{}, 10*time.Second); err != nil || !ok {
		t.Fatalf("caught up: %v %v", ok, err)
	}
	tests := []struct {
		name  string
		q     history.Query
		limit int
		want  []string // session ids, newest first
	}{
		{"room a by 3", history.Query{Rooms: []id.RoomID{a}}, 3, []string{"!a:hs-7", "!a:hs-6", "!a:hs-5", "!a:hs-4", "!a:hs-3", "!a:hs-2", "!a:hs-1"}},
		{"room b by 2", history.Query{Rooms: []id.RoomID{b}}, 2, []string{"!b:hs-6", "!b:hs-4", "!b:hs-2"}},
		{"both rooms by 4", history.Query{Rooms: []id.RoomID{a, b}}, 4, []string{"!a:hs-7", "!b:hs-6", "!a:hs-6", "!a:hs-5", "!b:hs-4", "!a:hs-4", "!a:hs-3", "!b:hs-2", "!a:hs-2", "!a:hs-1"}},
		{"every room by 5", history.Query{}, 5, []string{"!a:hs-7", "!b:hs-6", "!a:hs-6", "!a:hs-5", "!b:hs-4", "!a:hs-4", "!a:hs-3", "!b:hs-2", "!a:hs-2", "!a:hs-1"}},
		{"an application", history.Query{App: "io.game"}, 10, []string{"!b:hs-6", "!b:hs-4", "!b:hs-2"}},
		{"nothing", history.Query{Rooms: []id.RoomID{"!none:hs"}}, 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.Limit = tc.limit
			var got []string
			for pages := 0; ; pages++ {
				p, err := history.Read(ctx, js, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Entries) > tc.limit || pages > 10 {
					t.Fatalf("page of %d entries, page %d", len(p.Entries), pages)
				}
				for _, e := range p.Entries {
					got = append(got, e.Event.SessionID)
				}
				if p.Next == 0 {
					break
				}
				q.Before = p.Next
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestNoIndex(t *testing.T) {
	ctx, js := setup(t, false)
	if _, err := history.Read(ctx, js, history.Query{Limit: 1}); !errors.Is(err, history.ErrNoIndex) {
		t.Errorf("Read: %v, want ErrNoIndex", err)
	}
	if _, err := history.Read(ctx, js, history.Query{Rooms: []id.RoomID{"!a:hs"}, Limit: 1}); !errors.Is(err, history.ErrNoIndex) {
		t.Errorf("Read of a room: %v, want ErrNoIndex", err)
	}
	publishEnded(ctx, t, js, "!a:hs", "m.call", 1)
	if _, err := history.CaughtUp(ctx, js, history.Query{}, time.Second); !errors.Is(err, history.ErrNoIndex) {
		t.Errorf("CaughtUp: %v, want ErrNoIndex", err)
	}
	if _, err := history.Read(ctx, js, history.Query{}); err == nil {
		t.Error("a limit of 0 must be refused")
	}
}
