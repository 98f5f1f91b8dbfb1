package ingest

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// FuzzDecodeTransaction checks that no body makes the transaction decoder or
// the per-event preparation panic, that every failure is one of the
// documented errors, and that what is accepted is a valid forwarded event.
func FuzzDecodeTransaction(f *testing.F) {
	f.Add([]byte(txn(memberEvent("$a", "!r:hs", "@u:hs", "D", 1700000000000))))
	f.Add([]byte(`{"events":[{"type":"m.room.message","content":{}}],"ephemeral":[]}`))
	f.Add([]byte(`{"events":null}`))
	f.Add([]byte(`{"events":{}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"events":[1,"x",null,{"type":"m.rtc.member","state_key":"","sender":"@a:b","event_id":"$e","room_id":"!r:b","origin_server_ts":5,"content":{}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		raws, err := DecodeTransaction(body)
		if err != nil {
			if !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrBadJSON) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		for _, raw := range raws {
			ev, err := Prepare(raw, "", 1, "hs", events.SourceAppservice)
			if err != nil {
				if !errors.Is(err, ErrFiltered) && !errors.Is(err, ErrRejected) {
					t.Fatalf("undocumented error %v", err)
				}
				if errors.Is(err, ErrRejected) && RejectReason(err) == "" {
					t.Fatalf("rejection without reason: %v", err)
				}
				continue
			}
			if !events.IsForwarded(ev.Type) || ev.EventID == "" || ev.RoomID == "" || !json.Valid(ev.Content) {
				t.Fatalf("accepted a bad event: %+v", ev)
			}
			if _, err := events.EncodeRaw(&ev); err != nil {
				t.Fatalf("accepted event does not encode: %v", err)
			}
		}
	})
}
