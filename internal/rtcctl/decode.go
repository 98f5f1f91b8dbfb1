package rtcctl

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The payload kinds decode knows.
const (
	kindEvent  = "event"  // a session event (RTC_EVENTS, rtc.live.>)
	kindLive   = "live"   // a live session's own key in rtc_sessions
	kindMember = "member" // a member's key in rtc_sessions
	kindRaw    = "raw"    // an input of RTC_RAW (rtc.raw.>, rtc.part.>)
)

var decodeKinds = []string{kindEvent, kindLive, kindMember, kindRaw}

// maxDecodeBytes bounds what decode reads: RTC_RAW's largest message is
// well below.
const maxDecodeBytes = 16 << 20

// decodeCmd is `rtcctl decode`: a payload, as `nats sub --raw`, `nats
// stream get` or `nats kv get --raw` prints it, to JSON.
type decodeCmd struct {
	Kind string `name:"kind" enum:",event,live,member,raw" default:"" help:"What the payload is: event (a session event), live (a live session), member (a live session's member), raw (an input of RTC_RAW). Default: found from the payload."`
}

// DecodedPayload is what decode prints: the kind found, and the value.
type DecodedPayload struct {
	Kind  string `json:"kind"`
	Value any    `json:"value"`
}

func (c *decodeCmd) Run(e *runEnv) error {
	in, err := io.ReadAll(io.LimitReader(e.stdin(), maxDecodeBytes+1))
	if err != nil {
		return fmt.Errorf("read standard input: %w", err)
	}
	if len(in) > maxDecodeBytes {
		return fmt.Errorf("decode: more than %d bytes on standard input", maxDecodeBytes)
	}
	d, err := DecodePayload(in, c.Kind)
	if err != nil {
		return err
	}
	return writeJSON(e.stdout, d)
}

// DecodePayload decodes a payload of the given kind ("" to find it out).
// Besides the msgpack bytes themselves it takes them base64-encoded (as
// some tools show binary payloads), and ignores a final newline a terminal
// copy adds to base64.
func DecodePayload(in []byte, kind string) (DecodedPayload, error) {
	if len(in) == 0 {
		return DecodedPayload{}, errors.New("decode: nothing on standard input (pipe a payload in: nats kv get --raw, nats sub --raw)")
	}
	data := in
	if !isMsgpackMap(data) {
		if b, ok := fromBase64(in); ok && isMsgpackMap(b) {
			data = b
		} else {
			return DecodedPayload{}, fmt.Errorf("decode: not a msgpack map (it starts with %s): the pipeline's payloads are msgpack maps",
				safetext.Quote(string(in[:min(len(in), 16)])))
		}
	}
	if kind == "" {
		var err error
		if kind, err = detectKind(data); err != nil {
			return DecodedPayload{}, err
		}
	}
	var v any
	var err error
	switch kind {
	case kindEvent:
		v, err = events.DecodeSessionEvent(data)
	case kindLive:
		v, err = events.DecodeLiveSession(data)
	case kindMember:
		var m events.Member
		m, err = events.DecodeLiveMember(data)
		v = m
	case kindRaw:
		v, err = rawevent.DecodeRaw(data)
	default:
		return DecodedPayload{}, fmt.Errorf("%w: --kind %q: want one of %s", ErrUsage, kind, strings.Join(decodeKinds, ", "))
	}
	if err != nil {
		return DecodedPayload{}, fmt.Errorf("decode as %s: %w", kind, err)
	}
	return DecodedPayload{Kind: kind, Value: v}, nil
}

// isMsgpackMap: a msgpack map starts with a fixmap (0x80-0x8f), map16 or
// map32 byte.
func isMsgpackMap(b []byte) bool {
	return len(b) > 0 && (b[0]&0xf0 == 0x80 || b[0] == 0xde || b[0] == 0xdf)
}

func fromBase64(in []byte) ([]byte, bool) {
	s := strings.TrimSpace(string(in))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

// detectKind tells the payloads apart by their fields: a session event has
// a kind and a session id, a live session a session id and no kind, a
// member's value one field, member, and an input of RTC_RAW a kind ("event"
// or "timer") and no session id.
func detectKind(data []byte) (string, error) {
	var m map[string]msgpack.RawMessage
	if err := msgpack.NewDecoder(bytes.NewReader(data)).Decode(&m); err != nil {
		return "", fmt.Errorf("decode: not a msgpack map: %w", err)
	}
	has := func(k string) bool { _, ok := m[k]; return ok }
	switch {
	case has("session_id") && has("kind"):
		return kindEvent, nil
	case has("session_id"):
		return kindLive, nil
	case has("member") && !has("kind"):
		return kindMember, nil
	case has("kind") && has("room_id"):
		return kindRaw, nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return "", fmt.Errorf("decode: cannot tell what this is (fields %s): give --kind (%s)",
		safetext.Join(keys, ", "), strings.Join(decodeKinds, ", "))
}

func (e *runEnv) stdin() io.Reader {
	if e.in != nil {
		return e.in
	}
	return os.Stdin
}
