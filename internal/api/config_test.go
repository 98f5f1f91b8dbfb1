package api

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.Auth.Tokens = []TokenConfig{{Name: "dash", File: "/run/secrets/dash"}}
		return c
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("defaults with a token: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(*Config)
		wants []string // every one of them in the error
	}{
		{"no token, no anonymous", func(c *Config) { c.Auth.Tokens = nil }, []string{"allow_anonymous"}},
		{"anonymous only", func(c *Config) { c.Auth.Tokens, c.Auth.AllowAnonymous = nil, true }, nil},
		{"all reported together", func(c *Config) {
			c.Listen = "nowhere"
			c.Auth.Tokens = append(c.Auth.Tokens, TokenConfig{Name: "dash", File: ""}, TokenConfig{Name: "bad name!", File: "f", Rooms: []string{"#alias:hs"}})
			c.CORS.AllowedOrigins = []string{"dash.example.org"}
			c.SSE.Heartbeat = 0
			c.SSE.MaxClients = 0
			c.History.DefaultLimit = 600
			c.Log.Format = "xml"
		}, []string{`listen "nowhere"`, `"dash": used twice`, "file is required", `name "bad name!"`, `room "#alias:hs"`,
			`cors.allowed_origins "dash.example.org"`, "sse.heartbeat", "sse.max_clients", "history.default_limit", "log format"}},
		{"origins", func(c *Config) {
			c.CORS.AllowedOrigins = []string{"*", "https://a.example.org", "http://localhost:3000"}
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("want valid: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestExampleConfig: configs/rtcapi.yaml loads, validates, and says what
// the defaults are (an example that drifted from the code would mislead).
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "rtcapi.yaml")
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	if got.Listen != want.Listen || got.SSE != want.SSE || got.History != want.History || got.ShutdownGrace != want.ShutdownGrace ||
		got.Auth.AllowAnonymous || got.NATS.Name != want.NATS.Name || got.Log != want.Log {
		t.Errorf("the example's values differ from the defaults:\n%+v\n%+v", got, want)
	}
	if len(got.Auth.Tokens) == 0 {
		t.Error("the example has no token")
	}
}

func TestConfigEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rtcapi.yaml")
	if err := os.WriteFile(p, []byte("auth:\n  tokens:\n    - name: a\n      file: /x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RTC_API_LISTEN", "0.0.0.0:9999")
	t.Setenv("RTC_API_SSE_HEARTBEAT", "5s")
	t.Setenv("RTC_API_CORS_ALLOWED_ORIGINS", "https://a.example.org, https://b.example.org")
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:9999" || c.SSE.Heartbeat != 5*time.Second || len(c.CORS.AllowedOrigins) != 2 || c.Auth.Tokens[0].Name != "a" {
		t.Errorf("env overrides: %+v", c)
	}
	if err := os.WriteFile(p, []byte("listn: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "listn") {
		t.Errorf("a typo must be an error: %v", err)
	}
}

func TestAuthenticator(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, err := NewAuthenticator(AuthConfig{Tokens: []TokenConfig{
		{Name: "all", File: write("all", " tok-all \n")},
		{Name: "two", File: write("two", "tok-two"), Rooms: []string{"!b:hs", "!a:hs"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, header, query string
		ok                  bool
		scope               string
		allows, denies      id.RoomID
	}{
		{"bearer", "Bearer tok-all", "", true, "all", "!z:hs", ""},
		{"lower-case scheme", "bearer tok-two", "", true, "two", "!a:hs", "!z:hs"},
		{"query", "", "tok-two", true, "two", "!b:hs", "!c:hs"},
		{"wrong", "Bearer tok-al", "", false, "", "", ""},
		{"basic", "Basic dG9rLWFsbA==", "", false, "", "", ""},
		{"none", "", "", false, "", "", ""},
		{"header wins over query", "Bearer nope", "tok-all", false, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/sessions?access_token="+tc.query, nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			s, ok := a.Authenticate(r)
			if ok != tc.ok || s.Name != tc.scope {
				t.Fatalf("ok %v scope %q, want %v %q", ok, s.Name, tc.ok, tc.scope)
			}
			if tc.allows != "" && !s.Allows(tc.allows) {
				t.Errorf("does not allow %s", tc.allows)
			}
			if tc.denies != "" && s.Allows(tc.denies) {
				t.Errorf("allows %s", tc.denies)
			}
		})
	}
	anon, err := NewAuthenticator(AuthConfig{AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := anon.Authenticate(httptest.NewRequest("GET", "/", nil)); !ok || !s.All {
		t.Error("anonymous access refused")
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer guess")
	if _, ok := anon.Authenticate(r); ok {
		t.Error("a wrong token is not anonymous")
	}
	if _, err := NewAuthenticator(AuthConfig{Tokens: []TokenConfig{{Name: "x", File: filepath.Join(dir, "missing")},
		{Name: "y", File: write("empty", "\n")}, {Name: "z", File: write("dup", "tok-all")}, {Name: "w", File: write("dup2", "tok-all")}}}); err == nil ||
		!strings.Contains(err.Error(), "token x") || !strings.Contains(err.Error(), "token y") || !strings.Contains(err.Error(), "same secret") {
		t.Errorf("bad token files: %v", err)
	}
}
