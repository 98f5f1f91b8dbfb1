package jsutil

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPublishFastBatch: a fast batch stores its messages in order, and one
// that fails a check stops it there: what came before is stored, nothing
// after, and the caller is told how far it got.
func TestPublishFastBatch(t *testing.T) {
	nc, js := connect(t)
	fb, err := NewFastBatcher(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, AllowBatchPublish: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PLAIN", Subjects: []string{"p.>"}}); err != nil {
		t.Fatal(err)
	}
	msgs := func(prefix string, n int) []*nats.Msg {
		var ms []*nats.Msg
		for i := range n {
			m := nats.NewMsg(fmt.Sprintf("%s.%d", prefix, i%7))
			m.Data = []byte(strconv.Itoa(i))
			ms = append(ms, m)
		}
		return ms
	}
	stored := func() []string {
		t.Helper()
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(m.Data))
		}
		return got
	}

	// Far more messages than the flow-control window.
	all := msgs("s.a", 750)
	res, err := fb.Publish(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	if res.Count != 750 || res.Seq != 750 {
		t.Fatalf("result %+v, want 750 stored up to seq 750", res)
	}
	got := stored()
	for i, d := range got {
		if d != strconv.Itoa(i) {
			t.Fatalf("stream seq %d holds %q, want %d: not stored in order", i+1, d, i)
		}
	}

	// The 11th message expects a last sequence its subject does not have.
	bad := msgs("s.b", 40)
	bad[10].Header.Set(jetstream.ExpectedLastSubjSeqHeader, "1")
	res, err = fb.Publish(ctx, bad)
	if !errors.Is(err, ErrBatchStopped) {
		t.Fatalf("err %v, want ErrBatchStopped", err)
	}
	if got := stored(); len(got) != 750+10 || got[len(got)-1] != "9" {
		t.Fatalf("after the stopped batch the stream holds %d messages (last %q), want 760 ending with 9", len(got), got[len(got)-1])
	}
	if res.Count != 10 {
		t.Fatalf("stopped batch reports %d stored (%v), want 10", res.Count, err)
	}

	// A batch whose first message fails stores nothing.
	first := msgs("s.c", 5)
	first[0].Header.Set(jetstream.ExpectedLastSubjSeqHeader, "1")
	if res, err := fb.Publish(ctx, first); !errors.Is(err, ErrBatchStopped) || res.Count != 0 {
		t.Fatalf("first message failing: %+v, %v; want nothing stored, ErrBatchStopped", res, err)
	}
	if got := stored(); len(got) != 760 {
		t.Fatalf("after a batch whose first message failed the stream holds %d messages, want 760", len(got))
	}

	// Many batches at once over the one connection, each in order.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for b := range 20 {
		wg.Go(func() {
			ms := msgs(fmt.Sprintf("s.p%d", b), 30)
			res, err := fb.Publish(ctx, ms)
			if err == nil && res.Count != 30 {
				err = fmt.Errorf("batch %d stored %d of 30", b, res.Count)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for b := range 20 {
		n := -1
		for seq := uint64(761); seq <= 760+600; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(m.Subject, fmt.Sprintf("s.p%d.", b)) {
				continue
			}
			if d, _ := strconv.Atoi(string(m.Data)); d != n+1 {
				t.Fatalf("batch %d: message %d stored after %d", b, d, n)
			}
			n++
		}
	}

	// A stream without batch publishing refuses the batch; nothing stored.
	if _, err := fb.Publish(ctx, msgs("p.x", 5)); err == nil {
		t.Fatal("a stream without allow_batched took a fast batch")
	}
	if info, _ := js.Stream(ctx, "PLAIN"); info.CachedInfo().State.Msgs != 0 {
		t.Fatalf("PLAIN holds %d messages", info.CachedInfo().State.Msgs)
	}
}
