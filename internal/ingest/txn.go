package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Errors of the transaction decoder; the appservice maps them to Matrix error
// codes.
var (
	ErrNotJSON       = errors.New("body is not JSON")                      // 400 M_NOT_JSON
	ErrBadJSON       = errors.New("body is not an appservice transaction") // 400 M_BAD_JSON
	ErrTooManyEvents = errors.New("too many events in the transaction")    // 413 M_TOO_LARGE
	ErrTooComplex    = errors.New("JSON nested too deeply or array too long")
)

// TxnLimits bound what one transaction body may hold, so that its cost does
// not grow with what a homeserver chooses to send. Zero fields take the
// defaults of DefaultTxnLimits.
type TxnLimits struct {
	MaxEvents   int // elements of the "events" array; more: ErrTooManyEvents (413)
	MaxDepth    int // nesting depth of each event, and of every other member of the body
	MaxArrayLen int // elements of any array inside an event or another member
}

// DefaultTxnLimits are generous for real homeservers: Synapse sends at most
// 100 events (plus 100 EDUs) per transaction, and an Element Call membership
// nests 4 levels deep.
func DefaultTxnLimits() TxnLimits {
	return TxnLimits{MaxEvents: 10000, MaxDepth: 32, MaxArrayLen: 10000}
}

func (l TxnLimits) withDefaults() TxnLimits {
	d := DefaultTxnLimits()
	if l.MaxEvents <= 0 {
		l.MaxEvents = d.MaxEvents
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxArrayLen <= 0 {
		l.MaxArrayLen = d.MaxArrayLen
	}
	return l
}

// StreamTransaction decodes the body of PUT /_matrix/app/v1/transactions/{txnId},
// {"events": [ClientEvent, ...], ...}, from r without holding it whole: the
// "events" array is read element by element and each element is passed to
// each as its original JSON bytes (valid JSON, so that the content reaches
// RTC_RAW unchanged), with shapeErr wrapping ErrTooComplex when the element
// breaks lim (the caller rejects that event alone). An element that is not
// a valid event is not an error here either: it is rejected on its own.
// Other members (ephemeral, to_device, ...) are checked against lim and
// dropped; a missing or null "events" is an empty transaction. When each
// returns an error, decoding stops and StreamTransaction returns it as it is.
//
// It stops at the first element beyond lim.MaxEvents (ErrTooManyEvents), so
// a body of millions of elements costs no more than lim.MaxEvents of them.
// Errors wrap ErrNotJSON, ErrBadJSON, ErrTooManyEvents, ErrTooComplex, or
// are the reader's (a *http.MaxBytesError, say). each may have been called
// before an error: the caller must not act on a failed transaction.
func StreamTransaction(r io.Reader, lim TxnLimits, each func(raw json.RawMessage, shapeErr error) error) error {
	lim = lim.withDefaults()
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return syntaxErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrBadJSON)
	}
	sawEvents := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxErr(err)
		}
		key, _ := tok.(string) // object keys are always strings
		if key != "events" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return syntaxErr(err)
			}
			if err := checkShape(skip, lim.MaxDepth, lim.MaxArrayLen); err != nil {
				return fmt.Errorf("member %q: %w", clip(key), err)
			}
			continue
		}
		if sawEvents {
			return fmt.Errorf("%w: events given twice", ErrBadJSON)
		}
		sawEvents = true
		if err := streamEvents(dec, lim, each); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return syntaxErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("%w: data after the transaction object", ErrNotJSON)
		}
		return syntaxErr(err)
	}
	return nil
}

func streamEvents(dec *json.Decoder, lim TxnLimits, each func(json.RawMessage, error) error) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxErr(err)
	}
	if tok == nil { // "events": null
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("%w: events is not an array", ErrBadJSON)
	}
	for n := 0; dec.More(); n++ {
		if n == lim.MaxEvents {
			return fmt.Errorf("%w: more than %d", ErrTooManyEvents, lim.MaxEvents)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return syntaxErr(err)
		}
		if err := each(raw, checkShape(raw, lim.MaxDepth, lim.MaxArrayLen)); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return syntaxErr(err)
	}
	return nil
}

// syntaxErr classifies a decoder error: JSON syntax (including a body that
// ends early) is ErrNotJSON; anything else is the reader's own error.
func syntaxErr(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%w: %w", ErrNotJSON, err)
	default:
		return err
	}
}

// checkShape walks valid JSON and fails when it nests deeper than maxDepth
// or holds an array of more than maxArray elements. It allocates only its
// stack (at most maxDepth+1 frames) and stops at the first violation.
func checkShape(b []byte, maxDepth, maxArray int) error {
	type frame struct {
		array  bool
		commas int
	}
	var stack []frame
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			if len(stack) >= maxDepth {
				return fmt.Errorf("%w: deeper than %d", ErrTooComplex, maxDepth)
			}
			stack = append(stack, frame{array: c == '['})
		case ']', '}':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case ',':
			if n := len(stack); n > 0 && stack[n-1].array {
				stack[n-1].commas++
				if stack[n-1].commas >= maxArray { // commas+1 elements
					return fmt.Errorf("%w: array longer than %d", ErrTooComplex, maxArray)
				}
			}
		}
	}
	return nil
}

// DecodeTransaction decodes a whole transaction body held in memory with the
// default limits (tests, tools); the appservice streams with StreamTransaction.
// An element breaking the limits is returned too: Prepare rejects it on its own.
func DecodeTransaction(body []byte) ([]json.RawMessage, error) {
	var out []json.RawMessage
	err := StreamTransaction(bytes.NewReader(body), TxnLimits{}, func(raw json.RawMessage, _ error) error {
		out = append(out, raw)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
