package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

var update = flag.Bool("update", false, "rewrite "+ConfPath+" and the users in "+HelmValuesPath+" from the declarations")

// repoPath resolves a path relative to the repository root.
func repoPath(p string) string { return filepath.Join("..", "..", filepath.FromSlash(p)) }

// TestShippedConfIsRendered keeps configs/nats/rtc-accounts.conf equal to
// the declarations (go test ./internal/authz -update rewrites it).
func TestShippedConfIsRendered(t *testing.T) {
	want := RenderConf()
	if *update {
		if err := os.WriteFile(repoPath(ConfPath), want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(repoPath(ConfPath))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from internal/authz's declarations; run go test ./internal/authz -update", ConfPath)
	}
}

// setPasswords puts a password for every user into the environment the
// shipped configurations read them from, and returns them by user.
func setPasswords(t *testing.T) map[string]string {
	t.Helper()
	pw := map[string]string{}
	for _, u := range Users() {
		pw[u.Name] = "pw-" + u.Name + "-9d2f"
		t.Setenv(u.PasswordEnv, pw[u.Name])
	}
	return pw
}

// serverUsers loads a nats-server config with the real parser and returns
// its users by name.
func serverUsers(t *testing.T, path string) map[string]*server.User {
	t.Helper()
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", path, err)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	return users
}

func sorted(ss []string) []string {
	out := append([]string(nil), ss...)
	sort.Strings(out)
	return out
}

// checkUsers compares what the server parsed with the declarations.
func checkUsers(t *testing.T, where string, got map[string]*server.User, pw map[string]string) {
	t.Helper()
	if len(got) != len(Users()) {
		t.Errorf("%s: %d users, want %d", where, len(got), len(Users()))
	}
	for _, u := range Users() {
		su := got[u.Name]
		if su == nil {
			t.Errorf("%s: no user %s", where, u.Name)
			continue
		}
		if su.Password != pw[u.Name] {
			t.Errorf("%s: user %s: the password does not come from $%s", where, u.Name, u.PasswordEnv)
		}
		if su.Account == nil || su.Account.Name != Account {
			t.Errorf("%s: user %s is not in account %s", where, u.Name, Account)
		}
		p := su.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil {
			t.Errorf("%s: user %s has no publish/subscribe permissions", where, u.Name)
			continue
		}
		for _, c := range []struct {
			what      string
			got, want []string
		}{
			{"publish allow", p.Publish.Allow, u.Publish.Allow}, {"publish deny", p.Publish.Deny, u.Publish.Deny},
			{"subscribe allow", p.Subscribe.Allow, u.Subscribe.Allow}, {"subscribe deny", p.Subscribe.Deny, u.Subscribe.Deny},
		} {
			if len(c.got) == 0 && len(c.want) == 0 {
				continue
			}
			if !reflect.DeepEqual(sorted(c.got), sorted(c.want)) {
				t.Errorf("%s: user %s %s:\n got %q\nwant %q", where, u.Name, c.what, sorted(c.got), sorted(c.want))
			}
		}
		if (p.Response != nil) != u.AllowResponses {
			t.Errorf("%s: user %s may respond to requests: %v, declared %v", where, u.Name, p.Response != nil, u.AllowResponses)
		}
	}
}

// TestShippedConfLoads parses the shipped file with nats-server's own
// parser and finds exactly the declared users and permissions.
func TestShippedConfLoads(t *testing.T) {
	pw := setPasswords(t)
	checkUsers(t, ConfPath, serverUsers(t, repoPath(ConfPath)), pw)
}

// TestHelmValuesMatch checks deploy/k8s/nats-values.yaml: config.merge
// carries exactly HelmAccounts, every password variable reaches the
// container from a Secret, and rendered as the chart renders it, the server
// parses the same users and permissions.
func TestHelmValuesMatch(t *testing.T) {
	b, err := os.ReadFile(repoPath(HelmValuesPath))
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		i := bytes.Index(b, []byte(HelmBeginMarker))
		j := bytes.Index(b, []byte(HelmEndMarker))
		if i < 0 || j < i {
			t.Fatalf("%s: generated-users markers missing", HelmValuesPath)
		}
		b = append(append(append([]byte(nil), b[:i+len(HelmBeginMarker)]...), RenderHelmUsers()...), b[j:]...)
		if err := os.WriteFile(repoPath(HelmValuesPath), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var values struct {
		Config struct {
			Merge map[string]any `yaml:"merge"`
		} `yaml:"config"`
		Container struct {
			Env map[string]any `yaml:"env"`
		} `yaml:"container"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	gotAccounts := normalize(t, values.Config.Merge["accounts"])
	if want := normalize(t, HelmAccounts()); !reflect.DeepEqual(gotAccounts, want) {
		gj, _ := json.MarshalIndent(gotAccounts, "", " ")
		wj, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("nats-values.yaml config.merge.accounts differs from internal/authz:\n got %s\nwant %s", gj, wj)
	}
	for _, u := range Users() {
		var env struct {
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `json:"secretKeyRef"`
			} `json:"valueFrom"`
		}
		b, _ := json.Marshal(values.Container.Env[u.PasswordEnv])
		if err := json.Unmarshal(b, &env); err != nil || env.ValueFrom.SecretKeyRef.Name == "" || env.ValueFrom.SecretKeyRef.Key == "" {
			t.Errorf("container.env.%s: want valueFrom.secretKeyRef (%s)", u.PasswordEnv, b)
		}
	}

	// Like Helm's toRawJson: no HTML escaping of <, >, &.
	var merged bytes.Buffer
	enc := json.NewEncoder(&merged)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(values.Config.Merge); err != nil {
		t.Fatal(err)
	}
	conf := HelmMergeToConf(merged.String())
	if strings.Contains(conf, "<<") {
		t.Fatalf("unconverted << >> in %s", conf)
	}
	path := filepath.Join(t.TempDir(), "helm.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	pw := setPasswords(t)
	checkUsers(t, "nats-values.yaml", serverUsers(t, path), pw)

	// JetStream is on for the account as the chart renders it ("enabled"
	// quoted): the aggregator can create a stream.
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "js"), Port: -1,
		ConfigFile: path}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw[UserAggregator]), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := natsutil.Connect(context.Background(), natsutil.ConnConfig{URLs: []string{ns.ClientURL()}, User: UserAggregator,
		PasswordFile: pwFile, InboxPrefix: "_INBOX_aggregator"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: rawevent.StreamDLQ, Subjects: []string{rawevent.DLQPrefix + ".>"}}); err != nil {
		t.Fatalf("JetStream in the Helm-rendered account: %v", err)
	}
}

// normalize round-trips a value through JSON so that YAML-decoded and Go
// values compare equal.
func normalize(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHelmMergeToConf(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":"<< $X >>"}`, `{"a":$X}`},
		{`{"a":"<< $X >>","b":["<< $Y >>","z"]}`, `{"a":$X,"b":[$Y,"z"]}`},
		{`{"a":"plain"}`, `{"a":"plain"}`},
		{`{"a":"<< unterminated"}`, `{"a":"<< unterminated"}`},
		{`"<< >>"0`, `0`},
	}
	for _, tc := range tests {
		if got := HelmMergeToConf(tc.in); got != tc.want {
			t.Errorf("HelmMergeToConf(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestEveryUserIsRestricted: an empty allow list means "everything" to
// nats-server, so every user must have both lists, and no wildcard that
// reaches beyond rtc-sessions' own subjects.
func TestEveryUserIsRestricted(t *testing.T) {
	for _, u := range Users() {
		if len(u.Publish.Allow) == 0 || len(u.Subscribe.Allow) == 0 {
			t.Errorf("user %s: an empty allow list grants everything", u.Name)
		}
		for _, s := range append(append([]string(nil), u.Publish.Allow...), u.Subscribe.Allow...) {
			if s == ">" || s == "$JS.>" || s == "$JS.API.>" || s == "$KV.>" || s == "_INBOX.*" || strings.HasPrefix(s, "*") {
				t.Errorf("user %s: %q is too broad", u.Name, s)
			}
		}
	}
}

// FuzzHelmMergeToConf: any input is handled without panic; text without the
// marker comes back unchanged, and every complete "<< x >>" is unquoted.
func FuzzHelmMergeToConf(f *testing.F) {
	for _, s := range []string{`{"a":"<< $X >>"}`, `"<< `, ` >>"`, `"<<  >>"`, `{"a":["<< $A >>","<< $B >>"]}`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := HelmMergeToConf(in)
		if !strings.Contains(in, `"<<`) && out != in {
			t.Fatalf("changed text without a marker: %q -> %q", in, out)
		}
		if len(out) > len(in) {
			t.Fatalf("output grew: %q -> %q", in, out)
		}
	})
}

// TestClaimsDocIsRendered keeps the table of what each user can and cannot
// do in docs/nats.md equal to Claims (go test ./internal/authz -update
// rewrites it); TestShippedPermissions checks each claim against the server.
func TestClaimsDocIsRendered(t *testing.T) {
	path := repoPath(ClaimsDocPath)
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin := bytes.Index(doc, []byte(ClaimsBeginMarker))
	end := bytes.Index(doc, []byte(ClaimsEndMarker))
	if begin < 0 || end < begin {
		t.Fatalf("%s has no generated claims table (markers %q ... %q)", ClaimsDocPath, ClaimsBeginMarker, ClaimsEndMarker)
	}
	want := append(append(append([]byte(nil), doc[:begin+len(ClaimsBeginMarker)]...), RenderClaims()...), doc[end:]...)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		doc = want
	}
	if !bytes.Equal(doc, want) {
		t.Fatalf("the table of %s differs from authz.Claims; run go test ./internal/authz -update", ClaimsDocPath)
	}
	ids := map[string]bool{}
	for _, c := range Claims() {
		if _, ok := UserByName(c.User); !ok || ids[c.ID] || c.What == "" || strings.Contains(c.What, "|") {
			t.Errorf("claim %+v: unknown user, repeated id, empty text or a | in it", c)
		}
		ids[c.ID] = true
	}
}
