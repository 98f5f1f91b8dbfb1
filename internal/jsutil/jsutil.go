// Package jsutil holds the JetStream wire details the services share: the
// subjects and headers of KV writes published as plain messages, and
// publishing a set of messages asynchronously with one wait for all acks.
package jsutil

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KV writes as plain messages, the way the KV API sends them: a put is a
// message on $KV.<bucket>.<key>; a delete is an empty one with
// KV-Operation: DEL. Publishing them asynchronously lets many writes share
// one round trip, which the KV API (one request per write) cannot do.
const (
	kvSubjectPrefix = "$KV."
	kvOperation     = "KV-Operation"
	kvDelete        = "DEL"
	kvPurge         = "PURGE"
)

// KVSubject is the subject of key in bucket.
func KVSubject(bucket, key string) string { return kvSubjectPrefix + bucket + "." + key }

// KVPut is a put of value under key.
func KVPut(bucket, key string, value []byte) *nats.Msg {
	m := nats.NewMsg(KVSubject(bucket, key))
	m.Data = value
	return m
}

// KVDel is a delete of key (a delete marker, as kv.Delete writes).
func KVDel(bucket, key string) *nats.Msg {
	m := nats.NewMsg(KVSubject(bucket, key))
	m.Header.Set(kvOperation, kvDelete)
	return m
}

// KVPurgeTTL purges key (its earlier values go, as kv.Purge does) with a
// marker that expires after ttl, so the bucket keeps nothing of the key once
// watchers have seen it go (the bucket needs LimitMarkerTTL). ttl 0: a
// plain delete marker, kept.
func KVPurgeTTL(bucket, key string, ttl time.Duration) *nats.Msg {
	if ttl <= 0 {
		return KVDel(bucket, key)
	}
	m := nats.NewMsg(KVSubject(bucket, key))
	m.Header.Set(kvOperation, kvPurge)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Header.Set(jetstream.MsgTTLHeader, ttl.String())
	return m
}

// IsKVDelete reports whether a KV write message deletes or purges its key.
func IsKVDelete(m *nats.Msg) bool {
	op := m.Header.Get(kvOperation)
	return op == kvDelete || op == kvPurge
}

// ExpectRevision makes the write conditional on the key's current revision
// (0: the key has never been written), as kv.Update does.
func ExpectRevision(m *nats.Msg, rev uint64) *nats.Msg {
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	return m
}

// IsRevisionMismatch reports whether err is a failed revision check.
func IsRevisionMismatch(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Result is the outcome of one message of PublishAll.
type Result struct {
	Ack *jetstream.PubAck // nil when Err is set
	Err error
}

// PublishAll publishes msgs asynchronously, in order, and waits once for
// every ack (or ctx). It returns one result per message and the first
// error, wrapped with the subject it concerns. Messages published on one
// connection are stored in the order given, so a caller may rely on an
// earlier message of the set being stored before a later one of the same
// stream, unless the earlier one failed.
func PublishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) ([]Result, error) {
	res := make([]Result, len(msgs))
	futs := make([]jetstream.PubAckFuture, len(msgs))
	var first error
	// When the connection's window of unacknowledged async publishes is
	// full, wait for room (up to ctx's deadline) instead of failing after
	// the default 200 ms: many partitions publish whole batches at once.
	var opts []jetstream.PublishOpt
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, jetstream.WithStallWait(max(time.Until(d), time.Millisecond)))
	}
	for i, m := range msgs {
		f, err := js.PublishMsgAsync(m, opts...)
		if err != nil {
			res[i].Err = fmt.Errorf("publish %s: %w", m.Subject, err)
			if first == nil {
				first = res[i].Err
			}
			continue
		}
		futs[i] = f
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		res[i] = await(ctx.Done(), f, msgs[i].Subject)
		if res[i].Err == nil && res[i].Ack == nil {
			res[i].Err = fmt.Errorf("publish %s: %w", msgs[i].Subject, ctx.Err())
		}
		if res[i].Err != nil && first == nil {
			first = res[i].Err
		}
	}
	return res, first
}

// await is a future's ack or error; neither when done closes first (a nil
// done never does).
func await(done <-chan struct{}, f jetstream.PubAckFuture, subject string) Result {
	select {
	case pa := <-f.Ok():
		return Result{Ack: pa}
	case err := <-f.Err():
		return Result{Err: fmt.Errorf("publish %s: %w", subject, err)}
	case <-done:
		return Result{}
	}
}

// Flow bounds what a PublishAllFlow has in flight. Acquire is called
// before each message is published, and may wait (for a slot, for bytes);
// an error stops the publishing, and that message and the rest are not
// published. Release is called once for each message that Acquire let
// through, as soon as its ack or error has arrived: also after
// PublishAllFlow has returned because ctx ended, so that what Acquire took
// always comes back. Release runs on another goroutine than Acquire.
// Either may be nil.
type Flow struct {
	Acquire func(ctx context.Context, i int) error
	Release func(i int, r Result)
}

// PublishAllFlow is PublishAll with flow control: a set larger than the
// window Acquire allows is published as acks free room. The JetStream
// context must have an async publish timeout (jetstream.WithPublishAsyncTimeout),
// which bounds how long a lost ack holds what its message acquired.
func PublishAllFlow(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, flow Flow) ([]Result, error) {
	res := make([]Result, len(msgs))
	type result struct {
		i int
		r Result
	}
	type sent struct {
		i int
		f jetstream.PubAckFuture
	}
	// The collector resolves the futures in order, releasing each message's
	// share as its ack arrives, while later messages wait in Acquire.
	queue := make(chan sent, len(msgs))
	resolved := make(chan result, len(msgs))
	go func() {
		for s := range queue {
			r := await(nil, s.f, msgs[s.i].Subject) // the async publish timeout bounds it
			if flow.Release != nil {
				flow.Release(s.i, r)
			}
			resolved <- result{s.i, r}
		}
	}()
	var first error
	fail := func(i int, err error) {
		res[i].Err = err
		if first == nil {
			first = err
		}
	}
	published := 0
	for i, m := range msgs {
		if flow.Acquire != nil {
			if err := flow.Acquire(ctx, i); err != nil {
				for j := i; j < len(msgs); j++ {
					fail(j, fmt.Errorf("publish %s: not published: %w", msgs[j].Subject, err))
				}
				break
			}
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			r := Result{Err: fmt.Errorf("publish %s: %w", m.Subject, err)}
			if flow.Release != nil {
				flow.Release(i, r)
			}
			fail(i, r.Err)
			continue
		}
		queue <- sent{i, f}
		published++
	}
	close(queue)
	for range published {
		select {
		case rr := <-resolved:
			res[rr.i] = rr.r
			if rr.r.Err != nil && first == nil {
				first = rr.r.Err
			}
		case <-ctx.Done():
			// The rest resolve later (the collector releases them); report
			// them as not acknowledged in time.
			for i := range res {
				if res[i].Ack == nil && res[i].Err == nil {
					fail(i, fmt.Errorf("publish %s: %w", msgs[i].Subject, ctx.Err()))
				}
			}
			return res, first
		}
	}
	return res, first
}
