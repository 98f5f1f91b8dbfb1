package nodeconsumer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/vmihailenco/msgpack/v5"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// schemaBase is the $id prefix of docs/schemas/*.json.
const schemaBase = "https://rtc-sessions.invalid/schemas/"

// schemas compiles the JSON Schemas the AsyncAPI document names for its
// messages, by message name.
func schemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	root := authztest.RepoRoot()
	raw, err := os.ReadFile(filepath.Join(root, "docs", "asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AsyncAPI string `yaml:"asyncapi"`
		Channels map[string]struct {
			Address string `yaml:"address"`
		} `yaml:"channels"`
		Components struct {
			Messages map[string]struct {
				Payload struct {
					SchemaFormat string `yaml:"schemaFormat"`
					Schema       struct {
						Ref string `yaml:"$ref"`
					} `yaml:"schema"`
				} `yaml:"payload"`
			} `yaml:"messages"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml: %v", err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Errorf("asyncapi %q, want 3.0.0", doc.AsyncAPI)
	}
	// The channel addresses are the subjects and keys pkg/events builds.
	app, room, call := "m.call", "!abc:example.org", ""
	fill := func(addr string) string {
		r := strings.NewReplacer("{app}", events.Token(app), "{room}", events.Token(room), "{call}", events.Token(call),
			"{kind}", string(events.KindMemberJoined), "{member}", "M")
		return r.Replace(addr)
	}
	wantAddr := map[string]string{
		"sessionEvents": events.SessionSubject(app, call, id.RoomID(room), events.KindMemberJoined),
		"liveEvents":    events.LiveSubject(app, call, id.RoomID(room), events.KindMemberJoined),
		"endedSessions": topology.HistoryPrefix + "." + events.Token(room) + "." + events.Token(app) + "." + events.Token(call),
		"liveSessions":  "$KV." + events.BucketSessions + "." + events.SessionKey(app, id.RoomID(room), call),
		"liveMembers":   "$KV." + events.BucketSessions + "." + events.SessionKey(app, id.RoomID(room), call) + ".M",
	}
	for name, want := range wantAddr {
		if got := fill(doc.Channels[name].Address); got != want {
			t.Errorf("channel %s: address %q gives %q, want %q", name, doc.Channels[name].Address, got, want)
		}
	}

	c := jsonschema.NewCompiler()
	files, err := filepath.Glob(filepath.Join(root, "docs", "schemas", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("docs/schemas: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := c.AddResource(schemaBase+filepath.Base(f), v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for name, m := range doc.Components.Messages {
		if m.Payload.SchemaFormat != "application/schema+json;version=draft-07" {
			t.Errorf("message %s: schema format %q", name, m.Payload.SchemaFormat)
		}
		file := strings.TrimPrefix(m.Payload.Schema.Ref, "./schemas/")
		sch, err := c.Compile(schemaBase + file)
		if err != nil {
			t.Fatalf("message %s: %v", name, err)
		}
		out[name] = sch
	}
	for _, name := range []string{"sessionEvent", "liveSession", "liveMember"} {
		if out[name] == nil {
			t.Fatalf("docs/asyncapi.yaml has no message %s", name)
		}
	}
	return out
}

// asJSON decodes a msgpack payload into the JSON value a reader in another
// language sees (maps as objects, nil as null).
func asJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := msgpack.Unmarshal(data, &v); err != nil {
		t.Fatalf("msgpack: %v", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("as JSON: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// TestMessagesMatchTheSchemas validates every message the real pipeline
// writes for a few calls (session events of RTC_EVENTS and RTC_HISTORY,
// live sessions and live members of rtc_sessions) against the JSON Schemas
// of docs/asyncapi.yaml.
func TestMessagesMatchTheSchemas(t *testing.T) {
	sch := schemas(t)
	srv := authztest.Start(t)
	addr := startPipeline(t, srv)
	now := time.Now().UnixMilli()
	small, large := "!small:hs.test", "!large:hs.test"
	putTxn(t, addr, "1",
		member("$s1", small, "@alice:hs.test", "A1", "", now, ""),
		member("$s2", small, "@bob:hs.test", "B1", "", now+10, "video"))
	putTxn(t, addr, "2",
		member("$s3", small, "@alice:hs.test", "A1", "", now, "audio"),
		leave("$s4", small, "@bob:hs.test", "B1", "", now+30),
		leave("$s5", small, "@alice:hs.test", "A1", "", now+40))
	var big []string
	for i := range eventcodec.InlineMembersMax + 1 {
		big = append(big, member(fmt.Sprintf("$l%d", i), large, fmt.Sprintf("@u%02d:hs.test", i), "D", "conf", now+int64(i), ""))
	}
	putTxn(t, addr, "3", big...)
	// small: started, 2 joined, updated, 2 left, ended; large: started and
	// the joins.
	want := 7 + 1 + len(big)

	sub := srv.Connect(t, authz.UserSubscriber)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	waitFor(t, fmt.Sprintf("%d session events", want), func() bool {
		st, err := sub.JS.Stream(ctx, events.StreamEvents)
		return err == nil && st.CachedInfo().State.Msgs >= uint64(want)
	})

	kinds := map[events.Kind]int{}
	read := func(stream string, n int) {
		oc, err := sub.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatalf("%s: %v", stream, err)
		}
		for i := range n {
			m, err := oc.Next(jetstream.FetchMaxWait(waitTimeout))
			if err != nil {
				t.Fatalf("%s message %d: %v", stream, i, err)
			}
			if err := sch["sessionEvent"].Validate(asJSON(t, m.Data())); err != nil {
				t.Errorf("%s %s: %v", stream, m.Subject(), err)
			}
			ev, err := events.DecodeSessionEvent(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			if m.Headers().Get("Nats-Msg-Id") != ev.ID {
				t.Errorf("%s %s: Nats-Msg-Id %q, id %q", stream, m.Subject(), m.Headers().Get("Nats-Msg-Id"), ev.ID)
			}
			if h := m.Headers().Get(events.HeaderSchemaVersion); (h != "" || headerRequired) && h != fmt.Sprint(ev.V) {
				t.Errorf("%s %s: %s %q, v %d", stream, m.Subject(), events.HeaderSchemaVersion, h, ev.V)
			}
			if stream == events.StreamEvents {
				kinds[ev.Kind]++
			}
		}
	}
	read(events.StreamEvents, want)
	for _, k := range events.Kinds {
		if kinds[k] == 0 {
			t.Errorf("no %s among the validated events (%v)", k, kinds)
		}
	}
	waitFor(t, "the ended session in RTC_HISTORY", func() bool {
		st, err := sub.JS.Stream(ctx, topology.StreamHistory)
		return err == nil && st.CachedInfo().State.Msgs >= 1
	})
	read(topology.StreamHistory, 1)

	waitFor(t, "the large session's members in rtc_sessions", func() bool {
		live, err := events.ListLiveSessions(ctx, sub.JS)
		return err == nil && len(live) == 1 && len(live[0].Members) == len(big)
	})
	kv, err := sub.JS.KeyValue(ctx, events.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sessions, members := 0, 0
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		name := "liveSession"
		if strings.Count(e.Key(), ".") == 3 {
			name = "liveMember"
			members++
		} else {
			sessions++
		}
		if err := sch[name].Validate(asJSON(t, e.Value())); err != nil {
			t.Errorf("rtc_sessions %s: %v", e.Key(), err)
		}
	}
	if sessions != 1 || members != len(big) {
		t.Errorf("validated %d sessions and %d members, want 1 and %d", sessions, members, len(big))
	}
}

// The schemas reject what the previous versions wrote: empty fields left
// out, nested JSON as bytes.
func TestSchemasRejectTheOldEncoding(t *testing.T) {
	sch := schemas(t)
	type oldMember struct {
		UserID      string `json:"user_id"`
		DeviceID    string `json:"device_id"`
		FocusActive []byte `json:"focus_active,omitempty"`
	}
	old := struct {
		V      int        `json:"v"`
		Kind   string     `json:"kind"`
		Member *oldMember `json:"member,omitempty"`
	}{V: 2, Kind: "member_joined", Member: &oldMember{UserID: "@a:x", DeviceID: "D", FocusActive: []byte(`{"type":"livekit"}`)}}
	b, err := wire.MarshalReflective(&old)
	if err != nil {
		t.Fatal(err)
	}
	if err := sch["sessionEvent"].Validate(asJSON(t, b)); err == nil {
		t.Fatal("a version 2 event passes the schema")
	}
	// And accept what this version writes for the same member.
	ev := events.SessionEvent{ID: eventcodec.EventID("!r:x", 1), Seq: 1, Kind: events.KindMemberJoined,
		SessionID: eventcodec.SessionID("!r:x", "m.call", "", 1), RoomID: "!r:x", Application: "m.call",
		Member:       &events.Member{UserID: "@a:x", DeviceID: "D", FocusActive: json.RawMessage(`{"type":"livekit"}`)},
		Participants: 1, Users: 1}
	nb, err := eventcodec.EncodeSessionEvent(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := sch["sessionEvent"].Validate(asJSON(t, nb)); err != nil {
		t.Fatalf("a version %d event fails the schema: %v", events.SchemaVersion, err)
	}
}
