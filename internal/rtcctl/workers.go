package rtcctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/assign"
	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

type workersCmd struct {
	JSON bool `name:"json" help:"Print the workers and partitions as JSON."`
}

// WorkerView is a live aggregator worker: its heartbeat in rtc_workers and
// the partitions it owns by rendezvous hashing over the live workers.
type WorkerView struct {
	ID      string `json:"id"`
	Started string `json:"started,omitempty"`
	Owns    []int  `json:"owns"`
	// Pins are the pin ids the worker advertises, by partition.
	Pins map[string]string `json:"pins,omitempty"`
}

// PartitionView is one partition of RTC_RAW: its owner and its consumer's
// state.
type PartitionView struct {
	Partition int    `json:"partition"`
	Consumer  string `json:"consumer"`
	Owner     string `json:"owner"` // "" when no worker is live
	// PinnedClient is the consumer's pinned client id (priority group
	// "agg"); PinnedBy the live worker that advertises it, if any.
	PinnedClient   string    `json:"pinned_client,omitempty"`
	PinnedBy       string    `json:"pinned_by,omitempty"`
	PinnedAt       time.Time `json:"pinned_at,omitzero"`
	NumPending     uint64    `json:"num_pending"`
	NumAckPending  int       `json:"num_ack_pending"`
	NumRedelivered int       `json:"num_redelivered"`
	LastDelivery   time.Time `json:"last_delivery,omitzero"`
	Error          string    `json:"error,omitempty"`
}

// WorkersView is what `rtcctl workers --json` prints.
type WorkersView struct {
	Workers    []WorkerView    `json:"workers"`
	Partitions []PartitionView `json:"partitions"`
}

// heartbeat is the value of a worker's key in rtc_workers.
type heartbeat = ctlapi.Heartbeat

// Workers reads the live workers and the state of every partition consumer.
func Workers(e *runEnv, js jetstream.JetStream) (*WorkersView, error) {
	ctx := e.ctx
	n, err := topology.ExistingPartitions(ctx, js)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("stream %s: %w (has the aggregator run against this server?)", rawevent.StreamRaw, ErrNotFound)
	}
	kv, err := js.KeyValue(ctx, rawevent.BucketWorkers)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("bucket %s: %w (has the aggregator run against this server?)", rawevent.BucketWorkers, ErrNotFound)
		}
		return nil, fmt.Errorf("open bucket %s: %w", rawevent.BucketWorkers, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", rawevent.BucketWorkers, err)
	}
	// No w.Stop(): it asks the server to delete the watch's consumer and
	// waits up to 5 s for an answer that a user without CONSUMER.DELETE (the
	// operator users rtcctl runs as) never gets. Closing the connection at
	// the end of the command ends the watch; the server removes the
	// consumer once idle.
	hbs := map[string]heartbeat{}
	timeout := time.NewTimer(e.conn.Timeout)
	defer timeout.Stop()
read:
	for {
		select {
		case entry := <-w.Updates():
			if entry == nil { // the initial values are all there
				break read
			}
			var hb heartbeat
			if err := json.Unmarshal(entry.Value(), &hb); err != nil {
				hb.Started = "? (" + err.Error() + ")"
			}
			hbs[entry.Key()] = hb
		case <-timeout.C:
			return nil, fmt.Errorf("read bucket %s: no answer within %s", rawevent.BucketWorkers, e.conn.Timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	live := make([]string, 0, len(hbs))
	for id := range hbs {
		live = append(live, id)
	}
	sort.Strings(live)
	owned := assign.Assignment(live, n)
	pinOwner := map[string]string{}
	v := &WorkersView{Workers: []WorkerView{}, Partitions: make([]PartitionView, 0, n)}
	for _, id := range live {
		hb := hbs[id]
		for _, pin := range hb.Pins {
			pinOwner[pin] = id
		}
		v.Workers = append(v.Workers, WorkerView{ID: id, Started: hb.Started, Owns: owned[id], Pins: hb.Pins})
	}
	for p := 0; p < n; p++ {
		pv := PartitionView{Partition: p, Consumer: topology.ConsumerName(p), Owner: assign.Owner(live, p)}
		cons, err := js.Consumer(ctx, rawevent.StreamRaw, pv.Consumer)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = cons.Info(ctx)
		}
		if err != nil {
			pv.Error = err.Error()
			v.Partitions = append(v.Partitions, pv)
			continue
		}
		pv.NumPending, pv.NumAckPending, pv.NumRedelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
		if info.Delivered.Last != nil {
			pv.LastDelivery = *info.Delivered.Last
		}
		for _, g := range info.PriorityGroups {
			if g.Group == topology.ConsumerGroup && g.PinnedClientID != "" {
				pv.PinnedClient, pv.PinnedAt, pv.PinnedBy = g.PinnedClientID, g.PinnedTS, pinOwner[g.PinnedClientID]
			}
		}
		v.Partitions = append(v.Partitions, pv)
	}
	return v, nil
}

func (c *workersCmd) Run(e *runEnv) error {
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	v, err := Workers(e, js)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, v)
	}
	PrintWorkers(e, v)
	return nil
}

// PrintWorkers prints the workers and the partitions as two tables, every
// field escaped (safetext).
func PrintWorkers(e *runEnv, v *WorkersView) {
	w := e.stdout
	fmt.Fprintf(w, "workers (%d live)\n", len(v.Workers))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(v.Workers) > 0 {
		fmt.Fprintln(tw, "  WORKER\tSTARTED\tOWNS\tPARTITIONS")
	}
	for _, wk := range v.Workers {
		safetext.Fprintf(tw, "  %s\t%s\t%d\t%s\n", wk.ID, wk.Started, len(wk.Owns), compactRanges(wk.Owns))
	}
	_ = tw.Flush()
	if len(v.Workers) == 0 {
		fmt.Fprintln(w, "  none: no partition is being consumed")
	}
	var lag uint64
	for _, p := range v.Partitions {
		lag += p.NumPending
	}
	fmt.Fprintf(w, "partitions (%d, %d inputs pending)\n", len(v.Partitions), lag)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PARTITION\tCONSUMER\tOWNER\tPINNED\tPENDING\tACK PENDING\tREDELIVERED\tLAST DELIVERY")
	t := now()
	for _, p := range v.Partitions {
		owner := p.Owner
		if owner == "" {
			owner = "-"
		}
		if p.Error != "" {
			safetext.Fprintf(tw, "  %d\t%s\t%s\t%s\t\t\t\t\n", p.Partition, p.Consumer, owner, "error: "+p.Error)
			continue
		}
		pinned := "-"
		switch {
		case p.PinnedBy != "":
			pinned = p.PinnedBy
		case p.PinnedClient != "":
			pinned = "pin " + p.PinnedClient + " (no live worker)"
		}
		last := "-"
		if !p.LastDelivery.IsZero() {
			last = fmtTime(p.LastDelivery) + " (" + fmtDur(t.Sub(p.LastDelivery)) + " ago)"
		}
		safetext.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Partition, p.Consumer, owner, pinned,
			p.NumPending, p.NumAckPending, p.NumRedelivered, last)
	}
	_ = tw.Flush()
}

// compactRanges renders sorted partitions as "0-3,7,9-10".
func compactRanges(ps []int) string {
	if len(ps) == 0 {
		return "-"
	}
	var parts []string
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(ps[i]))
		} else {
			parts = append(parts, strconv.Itoa(ps[i])+"-"+strconv.Itoa(ps[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
