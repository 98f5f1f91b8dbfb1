package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Errors of DecodeTransaction; the appservice maps them to Matrix error codes.
var (
	ErrNotJSON = errors.New("body is not JSON")                      // M_NOT_JSON
	ErrBadJSON = errors.New("body is not an appservice transaction") // M_BAD_JSON
)

// DecodeTransaction decodes the body of PUT /_matrix/app/v1/transactions/{txnId}:
// {"events": [ClientEvent, ...], ...}. Each event is returned as its original
// JSON bytes, so that the content reaches RTC_RAW unchanged. Other members
// (ephemeral, to_device, ...) are ignored; a missing "events" is an empty
// transaction. An element that is not a valid event is not an error here: it
// is rejected on its own, without failing the transaction.
func DecodeTransaction(body []byte) ([]json.RawMessage, error) {
	if !json.Valid(body) {
		return nil, ErrNotJSON
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadJSON)
	}
	var txn struct {
		Events json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(trimmed, &txn); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	evs := bytes.TrimSpace(txn.Events)
	if len(evs) == 0 || bytes.Equal(evs, []byte("null")) {
		return nil, nil
	}
	if evs[0] != '[' {
		return nil, fmt.Errorf("%w: events is not an array", ErrBadJSON)
	}
	var out []json.RawMessage
	if err := json.Unmarshal(evs, &out); err != nil {
		return nil, fmt.Errorf("%w: events: %v", ErrBadJSON, err)
	}
	return out, nil
}
