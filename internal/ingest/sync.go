package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/startup"
)

// TokenStore persists a sync source's next_batch token, so that a restart
// resumes where the last stored batch ended.
type TokenStore interface {
	Load() (string, error) // "" when there is none yet (initial sync)
	Save(token string) error
}

// FileTokenStore keeps the token in one small file per homeserver
// (<state_dir>/<homeserver>.next_batch), replaced atomically.
type FileTokenStore struct{ Path string }

// NewFileTokenStore is the token store of homeserver name under dir.
func NewFileTokenStore(dir, name string) FileTokenStore {
	return FileTokenStore{Path: filepath.Join(dir, name+".next_batch")}
}

// Load reads the token; a missing file is no token.
func (s FileTokenStore) Load() (string, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read sync token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Save writes the token to a temporary file and renames it into place.
func (s FileTokenStore) Save(token string) error {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o750); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	tmp := s.Path + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("write sync token: %w", err)
	}
	if err := os.Rename(tmp, s.Path); err != nil {
		return fmt.Errorf("replace sync token: %w", err)
	}
	return nil
}

// SyncFilter is the /sync filter of the bot: only the forwarded types, in
// room state and timeline; no presence, account data or ephemeral events.
func SyncFilter() *mautrix.Filter {
	none := &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}}
	types := append([]event.Type(nil), rawevent.ForwardedTypes...)
	return &mautrix.Filter{
		AccountData: none,
		Presence:    none,
		Room: &mautrix.RoomFilter{
			AccountData: none,
			Ephemeral:   none,
			State:       &mautrix.FilterPart{Types: types, LazyLoadMembers: false},
			Timeline:    &mautrix.FilterPart{Types: types, Limit: 100},
		},
	}
}

// SyncOptions configure one homeserver's sync source.
type SyncOptions struct {
	Homeserver string // name (metrics, RawEvent.Homeserver)
	URL        string
	UserID     id.UserID
	Token      string // access token; empty: log in with Password
	Password   string
	DeviceID   id.DeviceID
	Timeout    time.Duration // /sync long-poll timeout
	BackoffMin time.Duration
	BackoffMax time.Duration
	HTTPClient *http.Client // nil: mautrix's default
}

// SyncSource is a bot account that syncs and forwards the membership events
// of every room it is in: the room state of a sync (initial or after a gap)
// as rawevent.SourceSyncState, the timeline as rawevent.SourceSync. The token is
// saved only after the whole response is stored in JetStream.
type SyncSource struct {
	opts   SyncOptions
	cli    *mautrix.Client
	pub    *Publisher
	store  TokenStore
	m      *Metrics
	log    *zap.Logger
	filter string
	now    func() time.Time
	tok    tokenBox     // the access token, for reconciliation's state reads (set at login)
	rooms  *RoomTracker // rooms seen with call state events, for reconciliation (nil: none)
}

// SetRoomTracker makes the source note the rooms of the call state events
// it stores (reconciliation candidates).
func (s *SyncSource) SetRoomTracker(t *RoomTracker) { s.rooms = t }

// AccessToken is the bot's access token ("" until a password login
// succeeded), safe to call from any goroutine.
func (s *SyncSource) AccessToken() string { return s.tok.get() }

// NewSyncSource builds a sync source; it does not contact the homeserver.
func NewSyncSource(opts SyncOptions, pub *Publisher, store TokenStore, m *Metrics, log *zap.Logger) (*SyncSource, error) {
	cli, err := mautrix.NewClient(opts.URL, opts.UserID, opts.Token)
	if err != nil {
		return nil, fmt.Errorf("sync %s: client: %w", opts.Homeserver, err)
	}
	if opts.HTTPClient != nil {
		cli.Client = opts.HTTPClient
	}
	cli.DeviceID = opts.DeviceID
	f, err := json.Marshal(SyncFilter())
	if err != nil {
		return nil, fmt.Errorf("sync filter: %w", err)
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = opts.BackoffMin
	}
	src := &SyncSource{opts: opts, cli: cli, pub: pub, store: store, m: m,
		log:    sampledLogger(log.With(zap.String("homeserver", opts.Homeserver), zap.String("source", "sync")), 10, m),
		filter: string(f), now: time.Now}
	src.tok.set(opts.Token)
	return src, nil
}

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join  map[id.RoomID]syncRoom `json:"join"`
		Leave map[id.RoomID]syncRoom `json:"leave"`
	} `json:"rooms"`
}

type eventList struct {
	Events []json.RawMessage `json:"events"`
}

type syncRoom struct {
	State    eventList `json:"state"`
	Timeline eventList `json:"timeline"`
	Sticky   eventList `json:"msc4354_sticky"` // MSC4354 sticky events section
}

// Run syncs until ctx ends, backing off exponentially (capped) on errors.
func (s *SyncSource) Run(ctx context.Context) error {
	// Each Retry ends at the first /sync that succeeds, so the wait starts
	// again from the minimum after one does.
	for ctx.Err() == nil {
		_ = startup.Retry(ctx, s.opts.BackoffMin, s.opts.BackoffMax, func() error {
			if err := s.login(ctx); err != nil {
				return err
			}
			return s.Once(ctx)
		}, func(err error, wait time.Duration) {
			s.m.SyncErrors.WithLabelValues(s.opts.Homeserver).Inc()
			s.log.Warn("sync failed, backing off", zap.Duration("wait", wait), zap.Error(err))
		})
	}
	return ctx.Err()
}

func (s *SyncSource) login(ctx context.Context) error {
	if s.cli.AccessToken != "" {
		return nil
	}
	resp, err := s.cli.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(s.opts.UserID)},
		Password:   s.opts.Password, DeviceID: s.opts.DeviceID,
		InitialDeviceDisplayName: "rtc-sessions ingest", StoreCredentials: true,
	})
	if err != nil {
		return fmt.Errorf("login as %s: %w", s.opts.UserID, err)
	}
	s.tok.set(resp.AccessToken)
	s.log.Info("logged in", zap.String("user_id", string(resp.UserID)), zap.String("device_id", string(resp.DeviceID)))
	return nil
}

// Once does one /sync request from the stored token, publishes what it
// returns and saves the new token.
func (s *SyncSource) Once(ctx context.Context) error {
	since, err := s.store.Load()
	if err != nil {
		return err
	}
	q := map[string]string{"filter": s.filter, "timeout": strconv.FormatInt(s.opts.Timeout.Milliseconds(), 10)}
	if since != "" {
		q["since"] = since
	} else {
		q["timeout"] = "0" // the initial sync answers at once
	}
	var resp syncResponse
	_, err = s.cli.MakeFullRequest(ctx, mautrix.FullRequest{
		Method:       http.MethodGet,
		URL:          s.cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q),
		ResponseJSON: &resp,
		MaxAttempts:  1,
	})
	if err != nil {
		return fmt.Errorf("sync since %q: %w", since, err)
	}
	if resp.NextBatch == "" {
		return errors.New("sync: response without next_batch")
	}
	now := s.now().UnixMilli()
	var state, timeline []rawevent.RawEvent
	for _, rooms := range []map[id.RoomID]syncRoom{resp.Rooms.Join, resp.Rooms.Leave} {
		for room, r := range rooms {
			log := s.log.With(zap.String("room_id", string(room)))
			state = append(state, prepareBatch(r.State.Events, string(room), now, s.opts.Homeserver, rawevent.SourceSyncState, s.m, log)...)
			timeline = append(timeline, prepareBatch(r.Timeline.Events, string(room), now, s.opts.Homeserver, rawevent.SourceSync, s.m, log)...)
			timeline = append(timeline, prepareBatch(r.Sticky.Events, string(room), now, s.opts.Homeserver, rawevent.SourceSync, s.m, log)...)
		}
	}
	// The rooms tracked for reconciliation are those of what the relay
	// rule let through.
	st, err := s.pub.Publish(ctx, s.opts.Homeserver, rawevent.SourceSyncState, state)
	s.rooms.Note(s.opts.Homeserver, state[:len(state)-st.Refused], s.now())
	if err != nil {
		return fmt.Errorf("sync: store room state: %w", err)
	}
	st, err = s.pub.Publish(ctx, s.opts.Homeserver, rawevent.SourceSync, timeline)
	s.rooms.Note(s.opts.Homeserver, timeline[:len(timeline)-st.Refused], s.now())
	if err != nil {
		return fmt.Errorf("sync: store timeline: %w", err)
	}
	if err := s.store.Save(resp.NextBatch); err != nil {
		return err
	}
	if since == "" {
		s.log.Info("initial sync stored", zap.Int("state_events", len(state)), zap.Int("timeline_events", len(timeline)))
	}
	return nil
}
