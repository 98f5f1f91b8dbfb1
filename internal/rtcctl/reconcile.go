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
	rctx, cancel := context.WithTimeout(e.ctx, c.Wait)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, ctlapi.ReconcileSubject, req)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no ingest serves %s (is one running with reconcile.on_demand, and may this user send it?): %w",
			ctlapi.ReconcileSubject, err)
	case err != nil:
		return fmt.Errorf("reconcile %s: %w", c.Room, err)
	}
	var reply ctlapi.ReconcileReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return fmt.Errorf("reconcile %s: the ingest's reply: %w", c.Room, err)
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
