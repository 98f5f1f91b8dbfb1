package roomstore

import (
	"sync"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Hand-written encoders of the records a commit writes (see internal/wire
// and events/wire.go): the same bytes as the reflective encoder, which
// wire_test.go checks on random values. wire.Marshal uses AppendMsgpack.

// AppendMsgpack appends the header as wire.Marshal encodes it.
func (h *Header) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Int("v", int64(h.V))
	w.Uint("last_in", h.LastIn)
	w.Int("timer_at", h.TimerAt)
	w.Bool("split", h.Split)
	appendParts(&w, h.Parts)
	w.Str("room_id", string(h.RoomID))
	w.Int("clock", h.Clock)
	w.Uint("seq", h.Seq)
	if len(h.Redacted) > 0 {
		w.Key("redacted")
		w.B = wire.AppendArrayLen(w.B, len(h.Redacted))
		for _, e := range h.Redacted {
			w.B = wire.AppendString(w.B, string(e))
		}
	}
	w.Bytes("redo", h.RedoData)
	w.Int("redo_chunks", int64(h.RedoChunks))
	return w.End()
}

// MsgpackSize is at least the length of the redo record's encoding.
func (r *Redo) MsgpackSize() int {
	n := 64 + partsSize(r.Parts)
	for _, e := range r.Events {
		n += 5 + len(e)
	}
	return n
}

// MsgpackSize is at least the length of the header's encoding.
func (h *Header) MsgpackSize() int {
	n := 128 + len(h.RoomID) + len(h.RedoData) + partsSize(h.Parts)
	for _, e := range h.Redacted {
		n += 5 + len(e)
	}
	return n
}

// scratch holds buffers for encodings that are garbage once used: a
// header's before it is compressed, a redo record's before it is placed in
// the header or cut into chunks.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// withScratch calls f with an empty pooled buffer; f returns the buffer it
// grew (which must not be referenced after withScratch returns).
func withScratch(f func(b []byte) []byte) {
	bp := scratch.Get().(*[]byte)
	putScratch(bp, f((*bp)[:0]))
}

// putScratch returns b, grown from the pooled *bp, to the pool.
func putScratch(bp *[]byte, b []byte) {
	if cap(b) <= 1<<20 { // do not keep what a rare large room grew
		*bp = b[:0]
		scratch.Put(bp)
	}
}

func partsSize(parts []Part) int {
	n := 5
	for i := range parts {
		n += 11 + len(parts[i].Key) + len(parts[i].Value)
	}
	return n
}

// AppendMsgpack appends the redo record as wire.Marshal encodes it.
func (r *Redo) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Uint("batch", r.Batch)
	appendParts(&w, r.Parts)
	if len(r.Events) > 0 {
		w.Key("events")
		w.B = wire.AppendArrayLen(w.B, len(r.Events))
		for _, e := range r.Events {
			w.B = wire.AppendBytes(w.B, e)
		}
	}
	return w.End()
}

// appendParts appends the "parts" entry: each part is [key, value]
// (Part.EncodeMsgpack).
func appendParts(w *wire.Map, parts []Part) {
	if len(parts) == 0 {
		return
	}
	w.Key("parts")
	w.B = wire.AppendArrayLen(w.B, len(parts))
	for i := range parts {
		w.B = wire.AppendArrayLen(w.B, 2)
		w.B = wire.AppendString(w.B, parts[i].Key)
		w.B = wire.AppendBytes(w.B, parts[i].Value)
	}
}

func (p *registerPart) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("key", p.Key)
	if p.Reg != nil {
		w.Key("reg")
		w.B = appendRegister(w.B, p.Reg)
	}
	return w.End()
}

func appendRegister(b []byte, r *rtc.Register) []byte {
	w := wire.Begin(b)
	w.Str("event_id", string(r.EventID))
	w.Str("sender", string(r.Sender))
	w.Int("ts", r.TS)
	w.Int("rank", r.Rank)
	w.Uint("kind", uint64(r.Kind))
	if len(r.Claims) > 0 {
		w.Key("claims")
		w.B = wire.AppendArrayLen(w.B, len(r.Claims))
		for i := range r.Claims {
			w.B = appendClaim(w.B, &r.Claims[i])
		}
	}
	w.Int("received_at", r.ReceivedAt)
	w.Str("why_code", string(r.WhyCode))
	w.Str("why", r.Why)
	return w.End()
}

func appendClaim(b []byte, c *rtc.Claim) []byte {
	w := wire.Begin(b)
	w.Str("app", c.App)
	w.Str("call_id", c.CallID)
	w.Str("user", string(c.User))
	w.Str("device", string(c.Device))
	w.Str("member_key", c.MemberKey)
	w.Str("membership_id", c.MembershipID)
	w.Int("created_ts", c.CreatedTS)
	w.Int("deadline", c.Deadline)
	w.Bytes("focus_active", c.FocusActive)
	w.Bytes("foci_preferred", c.FociPref)
	w.Str("call_intent", c.CallIntent)
	w.Str("format", string(c.Format))
	w.Str("event_id", string(c.EventID))
	w.Int("ts", c.TS)
	return w.End()
}

func (p *roomMemberPart) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("user", string(p.User))
	if m := p.M; m.Membership != "" || m.TS != 0 || m.EventID != "" { // an empty struct is left out
		w.Key("m")
		mw := wire.Begin(w.B)
		mw.Str("membership", m.Membership)
		mw.Int("ts", m.TS)
		mw.Str("event_id", string(m.EventID))
		w.B = mw.End()
	}
	return w.End()
}

func (p *slotPart) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("slot", p.Slot)
	if s := p.S; s.Open || s.TS != 0 || s.EventID != "" {
		w.Key("s")
		sw := wire.Begin(w.B)
		sw.Bool("open", s.Open)
		sw.Int("ts", s.TS)
		sw.Str("event_id", string(s.EventID))
		w.B = sw.End()
	}
	return w.End()
}

func (p *sessionPart) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("key", p.Key)
	w.Str("app", p.App)
	w.Str("call_id", p.CallID)
	w.Str("id", p.ID)
	w.Int("started_at", p.StartedAt)
	w.Int("peak", int64(p.Peak))
	w.Int("joins", int64(p.Joins))
	return w.End()
}

func (p *lastEndedPart) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("key", p.Key)
	w.Int("at", p.At)
	return w.End()
}

func (p *seenUserPart) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("session", p.Session)
	w.Str("user", string(p.User))
	return w.End()
}
