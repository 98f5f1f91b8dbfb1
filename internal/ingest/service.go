package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natsconn"
	"github.com/rtcsessions/rtc-sessions/internal/startup"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// ConnectNATS connects like natsutil.Connect, retrying with a capped backoff
// until ctx ends: the ingest may start before NATS (or the aggregator's
// embedded server) is up.
func ConnectNATS(ctx context.Context, c natsutil.ConnConfig, log *zap.Logger) (*nats.Conn, error) {
	var nc *nats.Conn
	var last error
	err := startup.Retry(ctx, 250*time.Millisecond, 5*time.Second, func() (err error) {
		nc, err = natsutil.Connect(ctx, c, log)
		if err != nil {
			last = err
			if errors.Is(err, natsconn.ErrServerTooOld) {
				return backoff.Permanent(err)
			}
		}
		return err
	}, func(err error, wait time.Duration) {
		log.Warn("nats not reachable yet, retrying", zap.Duration("wait", wait), zap.Error(err))
	})
	switch {
	case err == nil:
		return nc, nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("connect to nats: %w (last error: %w)", ctx.Err(), last)
	}
	return nil, err
}

// EnsureRaw creates (or verifies) RTC_RAW, retrying (startup.Ensure) until
// it succeeds, ctx ends or the configuration conflicts with the stream;
// onRetry, when not nil, learns each failed attempt's error.
func EnsureRaw(ctx context.Context, pub *Publisher, cfg Config, log *zap.Logger, onRetry func(error)) error {
	o := startup.Options{What: "ensure RTC_RAW", OnRetry: func(_ int, err error, _ time.Duration) {
		if onRetry != nil {
			onRetry(err)
		}
	}}
	return startup.Ensure(ctx, log, o, func(ctx context.Context) error {
		_, err := topology.EnsureRaw(ctx, pub.JetStream(), cfg.TopologyConfig(), topology.Mode(cfg.Topology.Mode))
		return err
	})
}

// Run is the ingest service: the appservice listener and the sync sources of
// the configured homeservers, the metrics/health server, until ctx ends.
// bound, when not nil, receives the appservice listener's address.
func Run(ctx context.Context, cfg Config, log *zap.Logger, reg *prometheus.Registry, bound chan<- string) error {
	hss, err := cfg.Secrets()
	if err != nil {
		return fmt.Errorf("ingest secrets: %w", err)
	}
	m := NewMetrics(reg)
	health := telemetry.NewHealth()
	ready := make(chan struct{})
	var lastErr atomic.Pointer[error]
	health.AddCheck("topology", func() error {
		select {
		case <-ready:
			return nil
		default:
			if err := lastErr.Load(); err != nil {
				return fmt.Errorf("RTC_RAW not ensured yet: %w", *err)
			}
			return errors.New("RTC_RAW not ensured yet")
		}
	})

	// Every goroutine runs in one group: the first to fail (a listener that
	// cannot bind, the reconciler's subscription) stops the others and is
	// what Run returns; a start interrupted by it returns it too, not the
	// interruption.
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return telemetry.Serve(gctx, cfg.MetricsAddr, telemetry.Handler(reg, health), log.Named("metrics"), nil)
	})
	var nc *nats.Conn
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	err = func() (err error) {
		nc, err = ConnectNATS(gctx, cfg.NATS, log)
		if err != nil {
			return err
		}
		pub, err := NewPublisher(nc, cfg.Publish.PublisherConfig(), m, log.Named("publish"))
		if err != nil {
			return err
		}
		health.AddCheck("nats", pub.Ready)
		pub.SetRelay(NewRelay(relayHomeservers(hss), cfg.Relay.MaxRooms, m, log.Named("relay")))
		if err := EnsureRaw(gctx, pub, cfg, log, func(err error) { lastErr.Store(&err) }); err != nil {
			return err
		}
		close(ready)
		log.Info("RTC_RAW ready", zap.Int("partitions", cfg.Topology.Partitions), zap.String("mode", cfg.Topology.Mode))
		return startSources(gctx, g, cfg, hss, nc, pub, m, log, bound)
	}()
	if err != nil {
		cancel()
		if gerr := g.Wait(); gerr != nil && parent.Err() == nil {
			return gerr
		}
		return err
	}
	err = g.Wait()
	if parent.Err() != nil {
		log.Info("ingest stopping")
		return nil
	}
	return err
}

// startSources starts, in g, the appservice listener, the sync sources and
// the reconciler of the configured homeservers.
func startSources(ctx context.Context, g *errgroup.Group, cfg Config, hss []Homeserver, nc *nats.Conn, pub *Publisher,
	m *Metrics, log *zap.Logger, bound chan<- string) error {
	tracker := NewRoomTracker(cfg.Reconcile.RecentWindow, cfg.Reconcile.MaxRecentRooms)
	var asHS []Homeserver
	for _, h := range hss {
		if h.HSToken != "" {
			asHS = append(asHS, h)
		}
	}
	if len(asHS) > 0 {
		as := NewAppservice(asHS, pub, m, log.Named("appservice"), cfg.Appservice.Options())
		as.SetRoomTracker(tracker)
		g.Go(func() error {
			if err := telemetry.Serve(ctx, cfg.Appservice.ListenAddr, as.Handler(), log.Named("appservice"), bound); err != nil {
				return fmt.Errorf("appservice listener: %w", err)
			}
			return nil
		})
		names := make([]string, len(asHS))
		for i, h := range asHS {
			names[i] = h.Name
		}
		log.Info("appservice homeservers", zap.Strings("homeservers", names))
	} else if bound != nil {
		close(bound)
	}
	syncs := map[string]*SyncSource{}
	for _, h := range cfg.Homeservers {
		if !h.Sync.Enabled {
			continue
		}
		opts := SyncOptions{Homeserver: h.Name, URL: h.URL, UserID: id.UserID(h.Sync.UserID), DeviceID: id.DeviceID(h.Sync.DeviceID),
			Timeout: cfg.Sync.Timeout, BackoffMin: cfg.Sync.BackoffMin, BackoffMax: cfg.Sync.BackoffMax}
		var err error
		if h.Sync.AccessTokenFile != "" {
			if opts.Token, err = config.ReadSecretFile(h.Sync.AccessTokenFile); err != nil {
				return fmt.Errorf("homeserver %s: sync access_token_file: %w", h.Name, err)
			}
		} else if opts.Password, err = config.ReadSecretFile(h.Sync.PasswordFile); err != nil {
			return fmt.Errorf("homeserver %s: sync password_file: %w", h.Name, err)
		}
		src, err := NewSyncSource(opts, pub, NewFileTokenStore(cfg.Sync.StateDir, h.Name), m, log.Named("sync"))
		if err != nil {
			return err
		}
		src.SetRoomTracker(tracker)
		syncs[h.Name] = src
		g.Go(func() error {
			// The source retries everything but the end of ctx itself.
			if err := src.Run(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("sync %s: %w", h.Name, err)
			}
			return nil
		})
	}
	if readers := stateReaders(cfg, hss, syncs, log); len(readers) > 0 {
		rec := NewReconciler(readers, pub, pub.JetStream(), tracker, m, log.Named("reconcile"), cfg.Reconcile.Options())
		g.Go(func() error { return rec.Run(ctx, nc) })
	} else {
		log.Info("reconciliation off: no homeserver has as_token_file or a sync bot")
		if cfg.Reconcile.OnDemand {
			sub, err := SubscribeReconcileOff(nc, "no homeserver has as_token_file (with url) or a sync bot to read room state with", log.Named("reconcile"))
			if err != nil {
				return err
			}
			g.Go(func() error {
				<-ctx.Done()
				_ = sub.Unsubscribe()
				return nil
			})
		}
	}
	return nil
}

// relayHomeservers is what the relay rule needs of the homeservers.
func relayHomeservers(hss []Homeserver) []RelayHomeserver {
	out := make([]RelayHomeserver, len(hss))
	for i, h := range hss {
		out[i] = RelayHomeserver{Name: h.Name, ServerName: h.ServerName, Mode: h.Relay}
	}
	return out
}

// stateReaders builds one room-state reader per homeserver that can read
// rooms, in configuration order: the appservice's sender (as_token_file and
// url), else the sync bot.
func stateReaders(cfg Config, hss []Homeserver, syncs map[string]*SyncSource, log *zap.Logger) []*StateReader {
	client := &http.Client{Timeout: cfg.Reconcile.RequestTimeout}
	var out []*StateReader
	for _, h := range hss {
		rd := &StateReader{Homeserver: h.Name, URL: h.URL, Client: client, MaxBytes: cfg.Reconcile.MaxStateBytes}
		switch src := syncs[h.Name]; {
		case h.ASToken != "" && h.URL != "":
			tok := h.ASToken
			rd.Kind, rd.Token = "appservice", func() string { return tok }
		case src != nil:
			rd.Kind, rd.Token = "sync", src.AccessToken
		default:
			continue
		}
		log.Info("reconciliation reads rooms", zap.String("homeserver", h.Name), zap.String("as", rd.Kind))
		out = append(out, rd)
	}
	return out
}
