package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// HeaderRoomRev stamps every live-session and timer write with the rtc_rooms
// revision of the commit it carries out. A worker that finds a newer stamp on
// a key it is about to overwrite has lost the room (see fencedWrites).
const HeaderRoomRev = "Rtc-Room-Rev"

// errFenced: a newer owner of the room has written past this worker's commit;
// the room is reloaded and nothing of the older commit is written.
var errFenced = errors.New("room written by a newer owner")

// effectJob is one commit's effects, to be carried out: the commit just
// stored, or the redo record of a room taken over.
type effectJob struct {
	rm         *roomstore.Room
	redo       *roomstore.Redo
	arm        bool           // publish the room's timer schedule
	peakBefore map[string]int // nil: a redo (see sessionWrites)

	parts   []*nats.Msg // revision-checked writes of the room's split parts
	writes  []*nats.Msg // live sessions and the timer: fenced (HeaderRoomRev)
	events  []*nats.Msg // the session events, in per-room seq order
	seqs    []uint64    // their per-room seq
	kinds   []events.Kind
	filter  string // roomEventsFilter
	nextEv  int    // events[:nextEv] are stored
	retries int    // fenced-write and event-chain mismatches so far
	err     error  // the effects failed (transient, or fenced)
	// eventsOnly: a copy of a job carrying out only its events, at the
	// same time as the job's writes (see publishEffects); it leaves the
	// room's fields of the writes alone.
	eventsOnly bool
	// committedAt: when this worker sent the commit (zero: a previous
	// owner's commit, carried out on load); markerTTL: how long the marker
	// of a deleted live-session key lasts (0: for ever).
	committedAt time.Time
	markerTTL   time.Duration
}

// absentIsSafe reports whether a live-session key of the job found absent
// needs no check of the room's ownership. A newer owner that wrote the key
// after this commit left a value, or, having ended the session since, a
// deletion marker that lasts markerTTL: the key can only be absent again
// once markerTTL has passed since this commit. Well within that, absent
// means nobody wrote it. (Both clocks are read: the monotonic one does not
// count a suspended machine, the wall clock jumps over it.)
func (j *effectJob) absentIsSafe() bool {
	if j.markerTTL == 0 {
		return true // markers are kept: a deleted key is never absent
	}
	if j.committedAt.IsZero() {
		return false
	}
	limit := j.markerTTL / 2
	return time.Since(j.committedAt) < limit && time.Now().Round(0).Sub(j.committedAt.Round(0)) < limit
}

// maxEffectRounds bounds the rounds of revision mismatches one set of effects
// may go through before it is retried as a whole (the room reloaded).
const maxEffectRounds = 5

// newEffectJob builds the messages of a commit's effects.
func newEffectJob(rm *roomstore.Room, redo *roomstore.Redo, arm bool, peakBefore map[string]int, markerTTL time.Duration, committedAt time.Time) (*effectJob, error) {
	if err := redo.DecodeOutbox(); err != nil {
		return nil, err
	}
	j := &effectJob{rm: rm, redo: redo, arm: arm, peakBefore: peakBefore, committedAt: committedAt, markerTTL: markerTTL}
	j.parts = rm.PartMsgs(redo)
	sess, err := sessionWrites(rm.State, redo.Outbox, peakBefore, markerTTL)
	if err != nil {
		return nil, err
	}
	j.writes = sess
	if arm && rm.TimerAt != 0 {
		m, err := TimerMsg(rm.State.RoomID, rm.TimerAt)
		if err != nil {
			return nil, err
		}
		j.writes = append(j.writes, m)
	}
	stamp := strconv.FormatUint(rm.Rev, 10)
	for _, m := range j.writes {
		m.Header.Set(HeaderRoomRev, stamp)
	}
	for i := range redo.Outbox { // published as encoded in the redo record
		ev := &redo.Outbox[i]
		j.events = append(j.events, events.SessionEventMsg(ev, redo.Events[i]))
		j.seqs = append(j.seqs, ev.Seq)
		j.kinds = append(j.kinds, ev.Kind)
	}
	return j, nil
}

// publishEffects carries out the effects of several rooms' commits, in the
// order the promises to subscribers need:
//
//  1. the split parts of rtc_rooms, the live sessions of rtc_sessions and the
//     room's timer, all at once. Each live-session and timer write is
//     conditional on the key's revision as this worker last knew it, and is
//     stamped with the commit's room revision: a key whose latest value
//     carries a newer stamp was written by the room's next owner, and this
//     worker stops (fencing: a stalled worker never overwrites a newer live
//     session).
//  2. the session events, one at a time per room and all rooms at once:
//     each is conditional on the room's last event in RTC_EVENTS being the
//     one before it (Nats-Expected-Last-Subject-Sequence over the room's
//     subjects), so the server stores a room's events in seq order, also
//     when a publish fails during a leader election and is retried.
//
// Live sessions go before the events, so that once a subscriber has seen a
// session_ended, rtc_sessions no longer shows the session.
//
// A job whose effects failed has err set; the caller reloads the room, whose
// redo record carries them out again.
//
// A job whose events only add to what rtc_sessions shows (sessions and
// members that start, members updated) has nothing to wait for: its events
// go at the same time as the writes, saving a round trip. (A stale worker's
// additive events are the true events of a stored commit, which the next
// owner's redo publishes too; the order condition keeps them from coming
// after anything newer.)
func (r *partRunner) publishEffects(jobs []*effectJob) {
	var twins, owners []*effectJob
	for _, j := range jobs {
		// One additive event rides with the writes anyway (canGoWithWrites).
		if j.err == nil && len(j.events)-j.nextEv >= 2 && j.onlyAdds() {
			twins = append(twins, &effectJob{rm: j.rm, redo: j.redo, events: j.events, seqs: j.seqs, kinds: j.kinds,
				nextEv: j.nextEv, eventsOnly: true})
			owners = append(owners, j)
			j.nextEv = len(j.events) // the writes stage leaves them alone
		}
	}
	var wg sync.WaitGroup
	if len(twins) > 0 {
		wg.Go(func() { r.publishEvents(twins) })
	}
	r.publishWrites(jobs)
	wg.Wait()
	for i, t := range twins {
		j := owners[i]
		j.nextEv, j.retries = t.nextEv, j.retries+t.retries
		if j.err == nil {
			j.err = t.err
		}
	}
	r.publishEvents(jobs)
}

// onlyAdds reports whether every event the job has left to publish only
// adds to what rtc_sessions shows.
func (j *effectJob) onlyAdds() bool {
	for _, k := range j.kinds[j.nextEv:] {
		switch k {
		case events.KindSessionStarted, events.KindMemberJoined, events.KindMemberUpdated:
		default:
			return false
		}
	}
	return true
}

// publishWrites is stage 1 of publishEffects.
func (r *partRunner) publishWrites(jobs []*effectJob) {
	for round := 0; ; round++ {
		var todo []*effectJob
		for _, j := range jobs {
			if j.err == nil && (len(j.parts) > 0 || len(j.writes) > 0) {
				todo = append(todo, j)
			}
		}
		if len(todo) == 0 {
			return
		}
		r.resolveRevs(todo)
		var msgs []*nats.Msg
		type span struct {
			j                *effectJob
			from, nParts, nW int
		}
		var spans []span
		for _, j := range todo {
			if j.err != nil {
				continue
			}
			sp := span{j: j, from: len(msgs), nParts: len(j.parts), nW: len(j.writes)}
			msgs = append(msgs, j.parts...)
			for _, m := range j.writes {
				msgs = append(msgs, jsutil.ExpectRevision(m, j.rm.KeyRevs[m.Subject]))
			}
			spans = append(spans, sp)
		}
		if len(msgs) == 0 {
			return
		}
		// The first event of a room that only adds to what rtc_sessions
		// shows goes in the same round trip (after the writes, in the order
		// of this connection): the events stage then has one wave less.
		nWrites := len(msgs)
		var early []*effectJob
		if round == 0 {
			for _, sp := range spans {
				if sp.j.canGoWithWrites() {
					msgs = append(msgs, sp.j.nextEventMsg())
					early = append(early, sp.j)
				}
			}
		}
		ctx, cancel := r.opCtx()
		res, _ := jsutil.PublishAll(ctx, r.d.js, msgs)
		cancel()
		for i, j := range early {
			r.eventPublished(j, res[nWrites+i])
		}
		for _, sp := range spans {
			j := sp.j
			var parts []*nats.Msg
			var writes []*nats.Msg
			for i := 0; i < sp.nParts; i++ {
				rr := res[sp.from+i]
				if rr.Err != nil {
					parts = append(parts, j.parts[i])
					if j.err == nil {
						j.err = rr.Err
					}
					continue
				}
				j.rm.PartWritten(j.redo.Parts[i].Key, rr.Ack.Sequence)
			}
			for i := 0; i < sp.nW; i++ {
				m, rr := j.writes[i], res[sp.from+sp.nParts+i]
				switch {
				case rr.Err == nil:
					j.rm.KeyRevs[m.Subject] = rr.Ack.Sequence
				case jsutil.IsRevisionMismatch(rr.Err):
					delete(j.rm.KeyRevs, m.Subject) // unknown: look it up
					j.rm.Fresh = false
					writes = append(writes, m)
				default:
					writes = append(writes, m)
					if j.err == nil {
						j.err = rr.Err
					}
				}
			}
			if len(parts) > 0 {
				continue // a part's revision check failed: reload the room
			}
			j.parts, j.writes = nil, writes
			if len(writes) > 0 && j.err == nil {
				j.retries++
				r.d.m.EffectConflicts.WithLabelValues("live_session").Inc()
				if j.retries >= maxEffectRounds {
					j.err = fmt.Errorf("live sessions of room %s: %d rounds of revision conflicts", j.rm.Key, j.retries)
				}
			}
		}
	}
}

// sessionsKVPrefix is the subject prefix of rtc_sessions' keys.
var sessionsKVPrefix = jsutil.KVSubject(events.BucketSessions, "")

// resolveRevs looks up the current revision of every fenced write's subject
// that the job's room does not know (a room just loaded, or a conflict),
// several at a time. A subject whose latest message is stamped with a newer
// room revision than the job's fences the job.
func (r *partRunner) resolveRevs(jobs []*effectJob) {
	type lookup struct {
		j    *effectJob
		subj string
		rev  uint64
		err  error
	}
	var ls []*lookup
	for _, j := range jobs {
		if j.rm.KeyRevs == nil {
			j.rm.KeyRevs = map[string]uint64{}
		}
		freshChecked := false
		for _, m := range j.writes {
			if _, ok := j.rm.KeyRevs[m.Subject]; !ok {
				if j.rm.Fresh {
					// A room stored first by this commit has no keys from
					// before it, but another owner may have written (and
					// the markers expired) since: one check of the room's
					// header instead of a look-up per key (subj ""), when
					// the commit is old enough for that.
					if j.absentIsSafe() {
						j.rm.KeyRevs[m.Subject] = 0
						continue
					}
					if !freshChecked {
						ls = append(ls, &lookup{j: j})
						freshChecked = true
					}
					continue
				}
				ls = append(ls, &lookup{j: j, subj: m.Subject})
			}
		}
	}
	if len(ls) == 0 {
		return
	}
	// Absent keys need one more check: an expired marker leaves nothing to
	// compare stamps with, so the room's header revision decides.
	var roomCheck sync.Map
	parallel(len(ls), roomsInFlight, func(i int) {
		l := ls[i]
		if l.subj == "" {
			ctx, cancel := r.opCtx()
			l.err = r.stillOwner(ctx, l.j)
			cancel()
			return
		}
		l.rev, l.err = r.currentRev(l.j, l.subj, &roomCheck)
	})
	for _, l := range ls {
		switch {
		case l.err == nil && l.subj == "":
			for _, m := range l.j.writes {
				if _, ok := l.j.rm.KeyRevs[m.Subject]; !ok {
					l.j.rm.KeyRevs[m.Subject] = 0
				}
			}
		case l.err == nil:
			l.j.rm.KeyRevs[l.subj] = l.rev
		case l.j.err == nil:
			l.j.err = l.err
			if errors.Is(l.err, errFenced) {
				r.d.m.EffectConflicts.WithLabelValues("fenced").Inc()
				r.log.Warn("a newer owner wrote the room: its older commit is not carried out",
					zap.String("room", l.j.rm.Key), zap.Uint64("room_rev", l.j.rm.Rev), zap.String("subject", l.subj))
			}
		}
	}
}

// currentRev is the revision (stream sequence of the latest message) of a
// fenced subject, or errFenced when that message was written for a newer
// commit of the room than the job's.
func (r *partRunner) currentRev(j *effectJob, subj string, roomCheck *sync.Map) (uint64, error) {
	stream := r.d.timers
	if strings.HasPrefix(subj, sessionsKVPrefix) {
		stream = r.d.sessions
	}
	ctx, cancel := r.opCtx()
	defer cancel()
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		if stream == r.d.timers {
			return 0, nil // fired or never armed: a stale timer is a no-op
		}
		if j.absentIsSafe() {
			return 0, nil
		}
		type checked struct{ err error }
		if v, ok := roomCheck.Load(j); ok {
			return 0, v.(checked).err
		}
		err := r.stillOwner(ctx, j)
		roomCheck.Store(j, checked{err})
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("look up %s: %w", subj, err)
	}
	if stamp, _ := strconv.ParseUint(m.Header.Get(HeaderRoomRev), 10, 64); stamp > j.rm.Rev {
		return 0, fmt.Errorf("%s stamped with room revision %d, this commit is %d: %w", subj, stamp, j.rm.Rev, errFenced)
	}
	return m.Sequence, nil
}

// stillOwner checks that the room's header is still at the job's revision:
// nobody committed the room after it.
func (r *partRunner) stillOwner(ctx context.Context, j *effectJob) error {
	e, err := r.d.rooms.Get(ctx, j.rm.Key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read room %s: %w", j.rm.Key, err)
	case e.Revision() != j.rm.Rev:
		return fmt.Errorf("room %s at revision %d, this commit is %d: %w", j.rm.Key, e.Revision(), j.rm.Rev, errFenced)
	}
	return nil
}

// publishEvents is stage 2 of publishEffects: every room's events in seq
// order, each conditional on the room's previous event being the last one
// stored for the room. Where RTC_EVENTS allows it, a room's several events
// go as one fast batch (eventbatch.go); the waves publish what is left.
func (r *partRunner) publishEvents(jobs []*effectJob) {
	if r.d.batcher != nil {
		r.publishEventsBatched(jobs)
	}
	r.eventWaves(jobs)
}

// eventWaves publishes the jobs' events one per room and round trip, all
// rooms at once.
func (r *partRunner) eventWaves(jobs []*effectJob) {
	for {
		var wave []*effectJob
		var lookups []*effectJob
		for _, j := range jobs {
			if j.err != nil || j.nextEv >= len(j.events) {
				continue
			}
			if !j.rm.EventsSeqKnown {
				lookups = append(lookups, j)
			}
			wave = append(wave, j)
		}
		if len(wave) == 0 {
			return
		}
		parallel(len(lookups), roomsInFlight, func(i int) { r.lastEvent(lookups[i]) })
		msgs := make([]*nats.Msg, 0, len(wave))
		var sent []*effectJob
		for _, j := range wave {
			if j.err != nil || j.nextEv >= len(j.events) {
				continue
			}
			msgs = append(msgs, j.nextEventMsg())
			sent = append(sent, j)
		}
		if len(msgs) == 0 {
			continue
		}
		ctx, cancel := r.opCtx()
		res, _ := jsutil.PublishAll(ctx, r.d.js, msgs)
		cancel()
		for i, j := range sent {
			r.eventPublished(j, res[i])
		}
	}
}

// nextEventMsg is the job's next event, conditional on the room's last
// event in RTC_EVENTS being the one this worker knows.
func (j *effectJob) nextEventMsg() *nats.Msg {
	m := j.events[j.nextEv]
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(j.rm.EventsSeq, 10))
	m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, roomEventsFilter(j))
	return m
}

// eventPublished takes the result of publishing the job's next event.
func (r *partRunner) eventPublished(j *effectJob, rr jsutil.Result) {
	switch {
	case rr.Err == nil:
		j.rm.EventsSeq = rr.Ack.Sequence
		j.nextEv++
	case jsutil.IsRevisionMismatch(rr.Err):
		if !j.eventsOnly {
			j.rm.Fresh = false
		}
		// Stored already (a retry after a lost ack, the previous owner's
		// redo) or the room's position is unknown: look at what the
		// stream holds.
		j.rm.EventsSeqKnown = false
		r.d.m.EffectConflicts.WithLabelValues("event_order").Inc()
		if j.retries++; j.retries >= maxEffectRounds {
			j.err = fmt.Errorf("events of room %s: %d rounds of order conflicts: %w", j.rm.Key, j.retries, rr.Err)
		}
	default:
		j.err = rr.Err
	}
}

// canGoWithWrites reports whether the job's next event may be published
// together with its live-session writes, in the same round trip: one that
// adds to what rtc_sessions shows (a session or member that starts, a member
// updated). A member_left or session_ended waits until rtc_sessions no
// longer shows what it ends.
func (j *effectJob) canGoWithWrites() bool {
	if j.nextEv >= len(j.events) || !j.rm.EventsSeqKnown {
		return false
	}
	switch j.kinds[j.nextEv] {
	case events.KindSessionStarted, events.KindMemberJoined, events.KindMemberUpdated:
		return true
	}
	return false
}

// roomEventsFilter is the subject filter over all of a room's events
// (built once per job: every event of the room carries it).
func roomEventsFilter(j *effectJob) string {
	if j.filter == "" {
		j.filter = events.SessionFilter(events.SessionPrefix, "", j.rm.State.RoomID, "")
	}
	return j.filter
}

// lastEvent learns where the room stands in RTC_EVENTS: the stream sequence
// of its last event, and the events of the job that are stored already (a
// room's events are stored in seq order, so every event at or below the last
// stored seq is).
func (r *partRunner) lastEvent(j *effectJob) {
	ctx, cancel := r.opCtx()
	defer cancel()
	m, err := r.d.eventsStream.GetLastMsgForSubject(ctx, roomEventsFilter(j))
	var lastSeq uint64
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		j.rm.EventsSeq = 0
	case err != nil:
		j.err = fmt.Errorf("look up the last event of room %s: %w", j.rm.Key, err)
		return
	default:
		ev, err := events.DecodeSessionEvent(m.Data)
		if err != nil {
			j.err = fmt.Errorf("last event of room %s (stream seq %d): %w", j.rm.Key, m.Sequence, err)
			return
		}
		j.rm.EventsSeq, lastSeq = m.Sequence, ev.Seq
	}
	j.rm.EventsSeqKnown = true
	for j.nextEv < len(j.events) && j.seqs[j.nextEv] <= lastSeq {
		j.nextEv++
	}
	if j.nextEv < len(j.events) && lastSeq != 0 && j.seqs[j.nextEv] != lastSeq+1 {
		// Not expected: the events before this commit's are not in the
		// stream (aged out, or removed by hand). Store these after them.
		r.log.Warn("room events do not follow the room's last stored event",
			zap.String("room", j.rm.Key), zap.Uint64("last_stored_seq", lastSeq), zap.Uint64("next_seq", j.seqs[j.nextEv]))
	}
}

// roomsInFlight bounds the per-room requests (loads, look-ups, event
// batches) a batch has in flight at once: a batch's rooms wait on one
// round trip together instead of one after another, and the requests are
// small.
const roomsInFlight = 64

// parallel runs f(0..n-1) with at most width at once.
func parallel(n, width int, f func(i int)) {
	if n == 1 {
		f(0)
		return
	}
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

// effectsAll carries out the effects of the rooms committed in this round
// (publishEffects). A room whose effects fail is reloaded on the next round:
// its redo record carries them out again.
func (r *partRunner) effectsAll(works []*roomWork) error {
	var failed error
	var jobs []*effectJob
	var owners []*roomWork
	for _, w := range works {
		if w.stage != stageEffects {
			continue
		}
		j, err := newEffectJob(w.rm, w.commit.Redo, w.arm, w.peakBefore, r.d.sessionMarkerTTL, w.committedAt)
		if err != nil { // an encoding error: the redo on reload will fail the same way
			failed = err
			r.reloadLater(w)
			continue
		}
		jobs = append(jobs, j)
		owners = append(owners, w)
	}
	if len(jobs) == 0 {
		return failed
	}
	start := time.Now()
	r.publishEffects(jobs)
	r.d.m.PublishSeconds.Observe(time.Since(start).Seconds())
	for i, j := range jobs {
		w := owners[i]
		if j.err != nil {
			failed = j.err
			r.reloadLater(w)
			continue
		}
		if w.arm {
			r.d.m.TimersArmed.Inc()
		}
		w.commit, w.rm.Redo = nil, nil
		// Inputs of the room not yet applied (isolating a failure commits
		// one at a time) make it go round again.
		w.stage = stageDone
		for _, in := range w.inputs {
			if in.result == "" {
				w.stage = stageApply
			}
		}
	}
	return failed
}

func (r *partRunner) reloadLater(w *roomWork) {
	r.d.cache.drop(w.key)
	w.rm, w.commit, w.stage = nil, nil, stageReload
	for _, in := range w.inputs {
		if in.result == "" {
			w.stage = stageApply // reload, then apply the rest
		}
	}
}

// carryOut carries out a commit's effects and waits for them (the redo of a
// room taken over).
func (r *partRunner) carryOut(rm *roomstore.Room, redo *roomstore.Redo, arm bool) error {
	j, err := newEffectJob(rm, redo, arm, nil, r.d.sessionMarkerTTL, time.Time{})
	if err != nil {
		return err
	}
	r.publishEffects([]*effectJob{j})
	return j.err
}
