package roomstore

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Copies without the hand-written encoders: encoded by reflection, as the
// originals were before wire.go.
type (
	plainHeader         Header
	plainRedo           Redo
	plainRegisterPart   registerPart
	plainRoomMemberPart roomMemberPart
	plainSlotPart       slotPart
	plainSessionPart    sessionPart
	plainSeenUserPart   seenUserPart
	plainLastEndedPart  lastEndedPart
)

func reflectiveEncode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := wire.MarshalReflective(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type gen struct{ *rand.Rand }

func (g gen) str() string {
	if g.IntN(2) == 0 {
		return ""
	}
	return strings.Repeat("x", []int{1, 31, 32, 255, 256}[g.IntN(5)])
}

func (g gen) i64() int64 {
	switch g.IntN(3) {
	case 0:
		return 0
	case 1:
		return -g.Int64N(1 << g.IntN(63))
	}
	return g.Int64N(1 << g.IntN(63))
}

func (g gen) bytes() []byte {
	switch g.IntN(3) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	return bytes.Repeat([]byte{7}, g.IntN(300))
}

func (g gen) parts() []Part {
	if g.IntN(3) == 0 {
		return nil
	}
	ps := make([]Part, g.IntN(20))
	for i := range ps {
		ps[i] = Part{Key: g.str(), Value: g.bytes()}
	}
	return ps
}

func (g gen) register() *rtc.Register {
	if g.IntN(5) == 0 {
		return nil
	}
	r := &rtc.Register{EventID: id.EventID(g.str()), Sender: id.UserID(g.str()), TS: g.i64(), Rank: g.i64(),
		Kind: rtc.RegisterKind(g.IntN(4)), ReceivedAt: g.i64(), WhyCode: rtc.RejectionCode(g.str()), Why: g.str()}
	for range g.IntN(4) {
		r.Claims = append(r.Claims, rtc.Claim{App: g.str(), CallID: g.str(), User: id.UserID(g.str()),
			Device: id.DeviceID(g.str()), MemberKey: g.str(), MembershipID: g.str(), CreatedTS: g.i64(),
			Deadline: g.i64(), FocusActive: json.RawMessage(g.bytes()), FociPref: json.RawMessage(g.bytes()),
			CallIntent: g.str(), Format: events.Format(g.str()), EventID: id.EventID(g.str()), TS: g.i64()})
	}
	return r
}

func TestHandWrittenRecordsMatchReflection(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	check := func(name string, fast any, plain any) {
		t.Helper()
		got, err := wire.Marshal(fast)
		if err != nil {
			t.Fatal(err)
		}
		if want := reflectiveEncode(t, plain); !bytes.Equal(got, want) {
			t.Fatalf("%s %+v:\n got % x\nwant % x", name, fast, got, want)
		}
	}
	for range 3000 {
		h := Header{V: int(g.i64()), LastIn: uint64(g.i64()), TimerAt: g.i64(), Split: g.IntN(2) == 0, Parts: g.parts(),
			RoomID: id.RoomID(g.str()), Clock: g.i64(), Seq: uint64(g.i64()), RedoData: g.bytes(), RedoChunks: int(g.i64())}
		if g.IntN(2) == 0 {
			h.Redacted = []id.EventID{}
			for range g.IntN(20) {
				h.Redacted = append(h.Redacted, id.EventID(g.str()))
			}
		}
		check("header", &h, (*plainHeader)(&h))

		r := Redo{Batch: uint64(g.i64()), Parts: g.parts()}
		if g.IntN(2) == 0 {
			for range g.IntN(20) {
				r.Events = append(r.Events, g.bytes())
			}
		}
		check("redo", &r, (*plainRedo)(&r))

		rp := registerPart{Key: g.str(), Reg: g.register()}
		check("register part", &rp, (*plainRegisterPart)(&rp))

		mp := roomMemberPart{User: id.UserID(g.str())}
		if g.IntN(3) > 0 {
			mp.M = rtc.RoomMember{Membership: g.str(), TS: g.i64(), EventID: id.EventID(g.str())}
		}
		check("room member part", &mp, (*plainRoomMemberPart)(&mp))

		sp := slotPart{Slot: g.str()}
		if g.IntN(3) > 0 {
			sp.S = rtc.Slot{Open: g.IntN(2) == 0, TS: g.i64(), EventID: id.EventID(g.str())}
		}
		check("slot part", &sp, (*plainSlotPart)(&sp))

		sess := sessionPart{Key: g.str(), App: g.str(), CallID: g.str(), ID: g.str(), StartedAt: g.i64(),
			Peak: int(g.i64()), Joins: int(g.i64())}
		check("session part", &sess, (*plainSessionPart)(&sess))

		su := seenUserPart{Session: g.str(), User: id.UserID(g.str())}
		check("seen user part", &su, (*plainSeenUserPart)(&su))

		le := lastEndedPart{Key: g.str(), At: g.i64()}
		check("last ended part", &le, (*plainLastEndedPart)(&le))
	}
}
