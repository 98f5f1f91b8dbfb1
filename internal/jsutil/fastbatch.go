package jsutil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Fast batches (nats-server 2.14+, a stream with allow_batched): messages
// published with a reply subject of the form
//
//	<inbox>.<batch id>.<flow>.fail.<batch seq>.<op>.$FI
//
// which the server stores in the order of their batch sequence, stopping
// the batch at the first message that is lost or fails its checks ("fail":
// no gaps). The server answers on the reply subjects: flow acks every
// <flow> messages, an error report for a failing message, and one PubAck
// for the batch when it is committed or stopped, with the count of messages
// stored.
//
// orbit.go's jetstreamext has a client for it, but it subscribes to a new
// inbox for every batch and waits for the first message's ack before
// sending the others: for a batch per room, many at once, that doubles the
// round trips and makes the server rebuild its subscription cache for each
// batch. FastBatcher uses one subscription for all batches of a connection
// and sends a batch in one go.

// ErrBatchStopped: the server stopped a fast batch before its last message
// (a message failed a check, or one was lost); the messages after the
// stored ones were not stored.
var ErrBatchStopped = errors.New("fast batch stopped early")

// Fast batch operations, the last token but one of the reply subject.
const (
	fastBatchStart  = "0"
	fastBatchAppend = "1"
	fastBatchCommit = "2"
)

// fastBatchFlow asks the server for a flow ack every this many messages;
// FastBatcher does not pace on them (its batches are bounded by the
// caller), so they only cost replies.
const fastBatchFlow = "1000"

// BatchResult is what a fast batch stored: its first Count messages, in
// order (a message dropped as a duplicate of its Nats-Msg-Id counts as
// stored), the last of them at stream sequence Seq.
type BatchResult struct {
	Count int
	Seq   uint64
}

// FastBatcher publishes fast batches over one connection.
type FastBatcher struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription

	mu      sync.Mutex
	waiting map[string]*pendingBatch
}

type pendingBatch struct {
	done     chan struct{}
	ack      *batchAck
	err      error // a terminal reply that is not an ack
	reported error // the first error report of a message
}

// batchAck is the server's PubAck of a fast batch.
type batchAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// NewFastBatcher subscribes to the replies of the connection's batches.
func NewFastBatcher(nc *nats.Conn) (*FastBatcher, error) {
	f := &FastBatcher{nc: nc, prefix: nc.NewInbox(), waiting: map[string]*pendingBatch{}}
	sub, err := nc.Subscribe(f.prefix+".>", f.onReply)
	if err != nil {
		return nil, fmt.Errorf("subscribe to fast batch replies: %w", err)
	}
	f.sub = sub
	return f, nil
}

// Close ends the reply subscription.
func (f *FastBatcher) Close() error { return f.sub.Unsubscribe() }

// Publish publishes msgs, all to one stream with batch publishing allowed,
// as one fast batch that does not tolerate gaps: the server stores the
// messages in the order given and stops at the first that is lost or fails
// its checks (for example a Nats-Expected-Last-Subject-Sequence), so a
// message is never stored after an earlier one of the batch that was not,
// under a leader election too (a new leader does not go on with a batch
// past a message it never received).
//
// It returns what is known stored: on success all of msgs; on
// ErrBatchStopped the stored prefix; on other errors (no reply in time, no
// stream) a zero result, though a prefix may be stored: the caller must
// find out. msgs are not modified.
func (f *FastBatcher) Publish(ctx context.Context, msgs []*nats.Msg) (BatchResult, error) {
	if len(msgs) == 0 {
		return BatchResult{}, nil
	}
	id := nuid.Next()
	p := &pendingBatch{done: make(chan struct{})}
	f.mu.Lock()
	f.waiting[id] = p
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
	}()
	base := f.prefix + "." + id + "." + fastBatchFlow + ".fail."
	last := len(msgs) - 1
	for i, m := range msgs {
		op := fastBatchAppend
		switch {
		case i == last:
			op = fastBatchCommit
		case i == 0:
			op = fastBatchStart
		}
		c := *m
		c.Reply = base + strconv.Itoa(i+1) + "." + op + ".$FI"
		if err := f.nc.PublishMsg(&c); err != nil {
			return BatchResult{}, fmt.Errorf("fast batch message %d of %d (%s): %w", i+1, len(msgs), m.Subject, err)
		}
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return BatchResult{}, fmt.Errorf("fast batch of %d, commit %s: %w", len(msgs), msgs[last].Subject, ctx.Err())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	why := func(err error) error {
		if p.reported != nil {
			return fmt.Errorf("%w (server: %w)", err, p.reported)
		}
		return err
	}
	switch {
	case p.err != nil:
		return BatchResult{}, why(fmt.Errorf("fast batch of %d: %w", len(msgs), p.err))
	case p.ack.Error != nil && p.ack.Count == 0:
		// The first message failed (the server answers as for a single
		// publish): nothing stored.
		return BatchResult{}, fmt.Errorf("fast batch of %d, first message %s: %w: %w", len(msgs), msgs[0].Subject, ErrBatchStopped, p.ack.Error)
	case p.ack.Error != nil:
		return BatchResult{}, why(fmt.Errorf("fast batch of %d: %w", len(msgs), p.ack.Error))
	}
	res := BatchResult{Count: p.ack.Count, Seq: p.ack.Seq}
	if res.Count < len(msgs) {
		return res, why(fmt.Errorf("fast batch stored %d of %d: %w", res.Count, len(msgs), ErrBatchStopped))
	}
	return res, nil
}

// onReply takes a reply of the server to a batch's message. The first
// terminal reply (the batch's PubAck, or an error answering for the whole
// batch) ends the wait; flow acks are not needed.
func (f *FastBatcher) onReply(m *nats.Msg) {
	// <prefix (two tokens)>.<id>.<flow>.fail.<seq>.<op>.$FI
	toks := strings.Split(strings.TrimPrefix(m.Subject, f.prefix+"."), ".")
	if len(toks) != 6 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.waiting[toks[0]]
	if p == nil || p.ack != nil || p.err != nil {
		return // a straggler of a batch that ended
	}
	if len(m.Data) == 0 {
		if status := m.Header.Get("Status"); status == "503" {
			p.err = nats.ErrNoResponders
		} else {
			p.err = fmt.Errorf("fast batch reply with status %q", status)
		}
		close(p.done)
		return
	}
	switch {
	case bytes.Contains(m.Data, []byte(`"type":"ack"`)), bytes.Contains(m.Data, []byte(`"type":"gap"`)):
		return
	case bytes.Contains(m.Data, []byte(`"type":"err"`)):
		var r struct {
			Seq   uint64              `json:"seq"`
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &r); err == nil && r.Error != nil && p.reported == nil {
			p.reported = fmt.Errorf("message %d: %w", r.Seq, r.Error)
		}
		return
	}
	var ack batchAck
	if err := json.Unmarshal(m.Data, &ack); err != nil {
		p.err = fmt.Errorf("fast batch reply %q: %w", m.Data, err)
	} else {
		p.ack = &ack
	}
	close(p.done)
}
