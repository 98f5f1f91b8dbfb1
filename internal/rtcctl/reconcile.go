package rtcctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
)

// reconcileCmd is `rtcctl reconcile ROOM`: ask the ingest to re-read the
// room's current call state from its homeservers now (docs/ingest.md
// "Reconciliation").
type reconcileCmd struct {
	Homeserver string        `name:"homeserver" placeholder:"NAME" help:"Read the room from this configured homeserver only (default: the ones that delivered its call events first, then the others, until one can read it)."`
	Wait       time.Duration `name:"wait" default:"60s" help:"How long to wait for the ingest's answer (its state reads are rate-limited)."`
	JSON       bool          `name:"json" help:"Print the ingest's reply as JSON."`
	Room       RoomID        `arg:"" name:"room" help:"The room id (!opaque:server)."`
}

func (c *reconcileCmd) Run(e *runEnv) error {
	req, err := json.Marshal(ctlapi.ReconcileRequest{RoomID: id.RoomID(c.Room), Homeserver: c.Homeserver})
	if err != nil {
		return fmt.Errorf("encode the request: %w", err)
	}
	nc, _, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	reply, err := requestReconcile(e.ctx, nc, req, c.Wait)
	if err != nil {
		return fmt.Errorf("reconcile %s: %w", c.Room, err)
	}
	if reply.Off != "" && !c.JSON {
		return fmt.Errorf("reconcile %s: the ingest does not reconcile on demand: %s (docs/ingest.md, \"Reconciliation\", says what it needs)",
			c.Room, reply.Off)
	}
	if c.JSON {
		if err := writeJSON(e.stdout, reply); err != nil {
			return err
		}
	} else {
		PrintReconcile(e.stdout, reply)
	}
	if reply.Error != "" {
		return fmt.Errorf("reconcile %s: %s", c.Room, reply.Error)
	}
	return nil
}

// offGrace is how long rtcctl waits, after an ingest that does not
// reconcile answered, for one that does (another replica, configured
// otherwise) before it reports the first answer.
const offGrace = 2 * time.Second

// requestReconcile sends the request and waits up to wait for the answer:
// the answer of an ingest that reconciled, else, after offGrace, that of
// one that does not reconcile on demand (it says why). Several ingests may
// answer (one per queue group), so the replies are read from an inbox of
// rtcctl's own rather than by nats.Conn.Request, which takes the first.
func requestReconcile(ctx context.Context, nc *nats.Conn, req []byte, wait time.Duration) (ctlapi.ReconcileReply, error) {
	var none ctlapi.ReconcileReply
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return none, fmt.Errorf("subscribe to the reply inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(ctlapi.ReconcileSubject, inbox, req); err != nil {
		return none, fmt.Errorf("send the request: %w", err)
	}
	deadline := time.Now().Add(wait)
	var off *ctlapi.ReconcileReply
	for {
		until := deadline
		if off != nil {
			until = time.Now().Add(min(offGrace, time.Until(deadline)))
		}
		mctx, cancel := context.WithDeadline(ctx, until)
		msg, err := sub.NextMsgWithContext(mctx)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return none, context.Cause(ctx)
		case err != nil && off != nil:
			return *off, nil
		case errors.Is(err, nats.ErrNoResponders): // the server's answer when nobody subscribes
			return none, fmt.Errorf("no ingest serves %s: none runs against this NATS server and account (an ingest "+
				"answers even when it does not reconcile): %v", ctlapi.ReconcileSubject, nats.ErrNoResponders)
		case err != nil:
			return none, fmt.Errorf("no answer from the ingest within --wait %s: %w", wait, err)
		}
		var reply ctlapi.ReconcileReply
		if err := json.Unmarshal(msg.Data, &reply); err != nil {
			return none, fmt.Errorf("the ingest's reply: %w", err)
		}
		if reply.Off == "" {
			return reply, nil
		}
		if off == nil {
			off = &reply
		}
	}
}

// PrintReconcile prints the ingest's reply to a reconcile request, one line
// per homeserver asked, every field escaped (safetext): the errors quote
// what the homeservers answered.
func PrintReconcile(w interface{ Write([]byte) (int, error) }, r ctlapi.ReconcileReply) {
	for _, a := range r.Attempts {
		if a.Error != "" {
			safetext.Fprintf(w, "%s: %s could not read it: %s\n", r.RoomID, a.Homeserver, a.Error)
			continue
		}
		safetext.Fprintf(w, "%s: reconciled from %s: %d state events, %d new in RTC_RAW, %d already there\n",
			r.RoomID, a.Homeserver, a.Events, a.Stored, a.Duplicates)
	}
}
