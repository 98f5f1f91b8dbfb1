package ingest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestConfigErrorsReportedTogether(t *testing.T) {
	c := DefaultConfig()
	c.Topology.Mode = "maybe"
	c.Publish.MaxInFlight = 0
	c.Homeservers = []HomeserverConfig{{Name: "hs1"}, {Name: "hs1", HSTokenFile: "x"}, {Name: "bad name!", URL: "ftp://x"}}
	c.Homeservers[0].Sync.Enabled = true
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"topology.mode", "max_in_flight", "used twice", "bad name!", "ftp://x", "sync needs url", "access_token_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestExampleConfigsLoad(t *testing.T) {
	for _, p := range []string{"../../configs/ingest.yaml", "../../configs/demo/ingest.yaml"} {
		c, err := LoadConfig(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if len(c.Homeservers) == 0 {
			t.Errorf("%s: no homeservers", p)
		}
	}
}

func TestSecretsDuplicateToken(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "tok")
	_ = os.WriteFile(f, []byte("same\n"), 0o600)
	c := DefaultConfig()
	c.Homeservers = []HomeserverConfig{{Name: "a", HSTokenFile: f}, {Name: "b", HSTokenFile: f}, {Name: "c", HSTokenFile: filepath.Join(dir, "missing")}}
	_, err := c.Secrets()
	if err == nil || !strings.Contains(err.Error(), "same hs_token as a") || !strings.Contains(err.Error(), "homeserver c") {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "same\n") {
		t.Fatal("secret leaked into the error")
	}
}

// TestExampleConfigShowsDefaults: configs/ingest.yaml documents the defaults
// of the bounds, so that reading it tells what runs.
func TestExampleConfigShowsDefaults(t *testing.T) {
	c, err := LoadConfig("../../configs/ingest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	if c.Appservice != d.Appservice {
		t.Errorf("configs/ingest.yaml appservice %+v, defaults %+v", c.Appservice, d.Appservice)
	}
	if c.Publish != d.Publish {
		t.Errorf("configs/ingest.yaml publish %+v, defaults %+v", c.Publish, d.Publish)
	}
	if c.Relay != d.Relay {
		t.Errorf("configs/ingest.yaml relay %+v, defaults %+v", c.Relay, d.Relay)
	}
}

func TestConfigBounds(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // "" valid
	}{
		{"defaults", nil, ""},
		{"env override", map[string]string{"RTC_INGEST_APPSERVICE_BODY_BUDGET_BYTES": "33554432",
			"RTC_INGEST_APPSERVICE_MAX_EVENTS": "500", "RTC_INGEST_APPSERVICE_RETRY_AFTER": "3s",
			"RTC_INGEST_APPSERVICE_MAX_JSON_DEPTH": "16", "RTC_INGEST_APPSERVICE_MAX_ARRAY_LEN": "100",
			"RTC_INGEST_PUBLISH_MAX_IN_FLIGHT_BYTES": "2097152"}, ""},
		{"budget below one body", map[string]string{"RTC_INGEST_APPSERVICE_BODY_BUDGET_BYTES": "1048576"}, "body_budget_bytes"},
		{"no events", map[string]string{"RTC_INGEST_APPSERVICE_MAX_EVENTS": "0"}, "max_events"},
		{"depth too small", map[string]string{"RTC_INGEST_APPSERVICE_MAX_JSON_DEPTH": "2"}, "max_json_depth"},
		{"no arrays", map[string]string{"RTC_INGEST_APPSERVICE_MAX_ARRAY_LEN": "0"}, "max_array_len"},
		{"retry too soon", map[string]string{"RTC_INGEST_APPSERVICE_RETRY_AFTER": "1ms"}, "retry_after"},
		{"publish bytes too small", map[string]string{"RTC_INGEST_PUBLISH_MAX_IN_FLIGHT_BYTES": "1000"}, "max_in_flight_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := LoadConfig("")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				o := c.Appservice.Options()
				if v, ok := tt.env["RTC_INGEST_APPSERVICE_MAX_EVENTS"]; ok && strconv.Itoa(o.Limits.MaxEvents) != v {
					t.Errorf("max_events %d, env %s", o.Limits.MaxEvents, v)
				}
				if v, ok := tt.env["RTC_INGEST_APPSERVICE_BODY_BUDGET_BYTES"]; ok && strconv.FormatInt(o.BodyBudget, 10) != v {
					t.Errorf("budget %d, env %s", o.BodyBudget, v)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one about %s", err, tt.want)
			}
		})
	}
}

// TestRelayConfig: server_name defaults to the name, is validated, belongs
// to one homeserver only (compared without case); relay takes rooms, never
// or always; relay.max_rooms has a default, an environment override and
// bounds.
func TestRelayConfig(t *testing.T) {
	dir := t.TempDir()
	tok := func(name string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(name+"-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	hs := func(name, server, relay string) HomeserverConfig {
		return HomeserverConfig{Name: name, ServerName: server, Relay: relay, HSTokenFile: tok(name)}
	}
	tests := []struct {
		name string
		hss  []HomeserverConfig
		want string // "" valid
	}{
		{"defaults", []HomeserverConfig{hs("hs1.example", "", ""), hs("a", "example.org", "never"), hs("b", "[::1]:8448", "always")}, ""},
		{"relay rooms", []HomeserverConfig{hs("a", "a.example", "rooms")}, ""},
		{"bad relay", []HomeserverConfig{hs("a", "", "sometimes")}, `relay "sometimes"`},
		{"bad server_name", []HomeserverConfig{hs("a", "exa mple.org", "")}, "server_name"},
		{"server_name with a user", []HomeserverConfig{hs("a", "@bot:example.org", "")}, "server_name"},
		{"server_name of another", []HomeserverConfig{hs("example.org", "", ""), hs("b", "Example.ORG", "")}, "also example.org's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Homeservers = tt.hss
			err := c.Validate()
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want one about %s", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			hss, err := c.Secrets()
			if err != nil {
				t.Fatal(err)
			}
			for i, h := range hss {
				want := tt.hss[i].ServerName
				if want == "" {
					want = tt.hss[i].Name
				}
				if h.ServerName != want || string(h.Relay) != tt.hss[i].Relay {
					t.Errorf("%s: server name %q relay %q, want %q %q", h.Name, h.ServerName, h.Relay, want, tt.hss[i].Relay)
				}
			}
		})
	}

	if d := DefaultConfig().Relay.MaxRooms; d != DefaultRelayMaxRooms {
		t.Errorf("default relay.max_rooms %d", d)
	}
	t.Setenv("RTC_INGEST_RELAY_MAX_ROOMS", "1234")
	c, err := LoadConfig("")
	if err != nil || c.Relay.MaxRooms != 1234 {
		t.Fatalf("env override: %+v %v", c.Relay, err)
	}
	t.Setenv("RTC_INGEST_RELAY_MAX_ROOMS", "0")
	if _, err := LoadConfig(""); err == nil || !strings.Contains(err.Error(), "relay.max_rooms") {
		t.Fatalf("relay.max_rooms 0: %v", err)
	}
}
