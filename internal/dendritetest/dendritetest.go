// Package dendritetest runs a real Matrix homeserver, Dendrite v0.15.2, for
// end-to-end tests: it builds Dendrite once per machine through
// tools/dendrite/dendrite.sh (a module of its own, cached between runs),
// starts instances on loopback with a generated configuration (SQLite,
// registration shared secret, appservice registration files, federation on
// or off), registers users with the shared secret, and stops the instances
// when the test ends, printing their log when the test failed.
//
// The build needs the go command and, the first time, the module proxy and
// a few minutes: tests that use this package are gated by the environment
// variable RTC_E2E (see Enabled).
package dendritetest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

// EnvVar gates the tests that need a Dendrite build.
const EnvVar = "RTC_E2E"

// Enabled reports whether RTC_E2E is set to a true value ("1", "true").
func Enabled() bool {
	v := strings.ToLower(os.Getenv(EnvVar))
	return v == "1" || v == "true" || v == "yes"
}

// Require skips t unless RTC_E2E is set: these tests build and run a real
// homeserver (minutes the first time on a machine).
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skipf("end-to-end test against a real Dendrite: set %s=1 to run it", EnvVar)
	}
}

var build struct {
	once sync.Once
	dir  string
	took time.Duration
	err  error
}

// Build builds (or finds in the cache) Dendrite and generate-keys, once per
// test process, and returns the directory holding bin/. It fails t when the
// build fails.
func Build(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		start := time.Now()
		build.dir, build.err = runScript(context.Background(), nil, "build")
		build.took = time.Since(start)
	})
	if build.err != nil {
		t.Fatalf("dendritetest: %v", build.err)
	}
	t.Logf("dendritetest: Dendrite in %s (found or built in %s)", build.dir, build.took.Round(time.Millisecond))
	return build.dir
}

// Script is the path of tools/dendrite/dendrite.sh in this source tree.
func Script() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the source tree")
	}
	p := filepath.Join(filepath.Dir(file), "..", "..", "tools", "dendrite", "dendrite.sh")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("tools/dendrite/dendrite.sh: %w", err)
	}
	return p, nil
}

// runScript runs dendrite.sh with args and env, and returns its trimmed
// standard output; the error carries its standard error.
func runScript(ctx context.Context, env []string, args ...string) (string, error) {
	script, err := Script()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("dendrite.sh %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Options configure one Dendrite instance.
type Options struct {
	// ServerName defaults to "localhost", or to the federation address when
	// Federation is on (other servers must reach it by its name).
	ServerName string
	// Appservices are registration files (YAML) the homeserver loads.
	Appservices []string
	// Federation listens for federation (TLS, self-signed) on a free
	// loopback port.
	Federation bool
	// LogLevel of Dendrite (default "warn").
	LogLevel string
}

// Server is one running Dendrite.
type Server struct {
	t       testing.TB
	Name    string // server name: the part after ':' in user ids
	Addr    string // client API, host:port
	FedAddr string // federation API (TLS), host:port; empty when off
	Dir     string // work directory: config, databases, log
	Secret  string // registration shared secret
	args    []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start builds Dendrite if needed, writes a configuration into a new
// temporary directory and runs Dendrite until t ends (SIGKILL then), waiting
// until its client API answers. When t fails, the tail of Dendrite's log is
// written to the test log.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Build(t)
	s := &Server{t: t, Addr: testutil.FreePort(t), Dir: t.TempDir()}
	_, port, _ := strings.Cut(s.Addr, ":")
	env := []string{"PORT=" + port, "LOG_LEVEL=" + o.LogLevel}
	if o.LogLevel == "" {
		env[1] = "LOG_LEVEL=warn"
	}
	if o.Federation {
		s.FedAddr = testutil.FreePort(t)
		_, fport, _ := strings.Cut(s.FedAddr, ":")
		env = append(env, "FED_PORT="+fport)
		if o.ServerName == "" {
			o.ServerName = s.FedAddr
		}
	}
	if o.ServerName == "" {
		o.ServerName = "localhost"
	}
	s.Name = o.ServerName
	env = append(env, "SERVER_NAME="+o.ServerName)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := runScript(ctx, env, append([]string{"config", s.Dir}, o.Appservices...)...)
	if err != nil {
		t.Fatalf("dendritetest: %v", err)
	}
	s.args = strings.Split(out, "\n")
	secret, err := os.ReadFile(filepath.Join(s.Dir, "registration_shared_secret"))
	if err != nil {
		t.Fatalf("dendritetest: %v", err)
	}
	s.Secret = string(secret)
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			s.DumpLog(80)
		}
	})
	if err := s.start(); err != nil {
		t.Fatalf("dendritetest: %v", err)
	}
	return s
}

func (s *Server) start() error {
	logFile, err := os.OpenFile(filepath.Join(s.Dir, "dendrite.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dendrite log: %w", err)
	}
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start dendrite: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := httpOK(s.URL() + "/_matrix/client/versions")
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("dendrite exited during startup (%s): %w\n%s", cmd.ProcessState, err, s.LogTail(40))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dendrite not answering after 60s: %w\n%s", err, s.LogTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL is the client API base URL (http://127.0.0.1:PORT).
func (s *Server) URL() string { return "http://" + s.Addr }

// Stop stops Dendrite (SIGTERM, then SIGKILL after 10s) and waits for it.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		s.kill()
		return errors.New("dendrite did not exit within 10s of SIGTERM: killed")
	}
}

func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// Restart stops Dendrite and starts it again on the same port, configuration
// and databases.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start()
}

// LogTail is the last n lines of Dendrite's log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "dendrite.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// DumpLog writes the last n lines of Dendrite's log to the test log.
func (s *Server) DumpLog(n int) {
	s.t.Logf("---- last %d lines of dendrite %s (%s) ----\n%s", n, s.Name, s.Dir, s.LogTail(n))
}

// UserID is @localpart:server_name.
func (s *Server) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.Name)
}

// Register creates a user with the registration shared secret (the
// Synapse-compatible admin API, which works with registration disabled)
// and returns the user id and an access token.
func (s *Server) Register(ctx context.Context, localpart, password string) (id.UserID, string, error) {
	url := s.URL() + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := doJSON(ctx, http.MethodGet, url, nil, &nonce); err != nil {
		return "", "", fmt.Errorf("register %s: nonce: %w", localpart, err)
	}
	mac := hmac.New(sha1.New, []byte(s.Secret))
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00notadmin"))
	req := map[string]any{"nonce": nonce.Nonce, "username": localpart, "password": password,
		"admin": false, "mac": hex.EncodeToString(mac.Sum(nil))}
	var resp struct {
		UserID      id.UserID `json:"user_id"`
		AccessToken string    `json:"access_token"`
	}
	if err := doJSON(ctx, http.MethodPost, url, req, &resp); err != nil {
		return "", "", fmt.Errorf("register %s: %w", localpart, err)
	}
	if resp.UserID == "" || resp.AccessToken == "" {
		return "", "", fmt.Errorf("register %s: reply without user_id or access_token", localpart)
	}
	return resp.UserID, resp.AccessToken, nil
}

// Password is the password NewUser gives localpart (at least 8 characters,
// as Dendrite requires).
func Password(localpart string) string { return "pw-" + localpart + "-e2e" }

// NewUser registers localpart (password Password(localpart)) and logs in
// with deviceID, so that the client's device is the one a test chooses; it
// fails t on error.
func (s *Server) NewUser(t testing.TB, localpart string, deviceID id.DeviceID) *mautrix.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := s.Register(ctx, localpart, Password(localpart)); err != nil {
		t.Fatalf("dendritetest: %v", err)
	}
	cli, err := s.Login(ctx, localpart, Password(localpart), deviceID)
	if err != nil {
		t.Fatalf("dendritetest: %v", err)
	}
	return cli
}

// Login logs localpart in with deviceID and returns a client holding the
// credentials.
func (s *Server) Login(ctx context.Context, localpart, password string, deviceID id.DeviceID) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(s.URL(), "", "")
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", s.URL(), err)
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:   password, DeviceID: deviceID, StoreCredentials: true,
	})
	if err != nil {
		return nil, fmt.Errorf("login %s as device %s: %w", localpart, deviceID, err)
	}
	return cli, nil
}

// CallMemberTypes are the state event types a call room lets every member
// send (power level 0): without that override Dendrite's default
// state_default of 50 forbids them to ordinary members.
var CallMemberTypes = []string{"org.matrix.msc3401.call.member", "m.rtc.member", "org.matrix.msc4143.rtc.member",
	"m.rtc.slot", "org.matrix.msc4143.rtc.slot"}

// CreateCallRoom creates a private room (room version 10) by cli, inviting
// invite, in which every member may send call-membership state events.
func CreateCallRoom(ctx context.Context, cli *mautrix.Client, invite ...id.UserID) (id.RoomID, error) {
	return CreateCallRoomVersion(ctx, cli, "10", invite...)
}

// CreateCallRoomVersion is CreateCallRoom with another room version (12:
// room ids without a server part).
func CreateCallRoomVersion(ctx context.Context, cli *mautrix.Client, version string, invite ...id.UserID) (id.RoomID, error) {
	pl := map[string]int{}
	for _, typ := range CallMemberTypes {
		pl[typ] = 0
	}
	req := map[string]any{"preset": "private_chat", "room_version": version, "invite": invite,
		"power_level_content_override": map[string]any{"events": pl}}
	if invite == nil {
		req["invite"] = []id.UserID{}
	}
	var resp mautrix.RespCreateRoom
	if _, err := cli.MakeRequest(ctx, http.MethodPost, cli.BuildClientURL("v3", "createRoom"), req, &resp); err != nil {
		return "", fmt.Errorf("create room: %w", err)
	}
	return resp.RoomID, nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func httpOK(url string) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func doJSON(ctx context.Context, method, url string, body, into any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read reply: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("%s %s: decode reply: %w", method, url, err)
	}
	return nil
}
