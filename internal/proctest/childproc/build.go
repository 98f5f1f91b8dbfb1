package childproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// NATSServerPkg is nats-server's main package; built in the module, it is
// the version go.mod requires (the one the embedded mode uses).
const NATSServerPkg = "github.com/nats-io/nats-server/v2"

// Build builds the main packages pkgs (import paths, or ./cmd/x relative to
// moduleDir) in moduleDir into dir with one `go build`, and returns the
// paths of their executables in the order of pkgs. It passes no -race or
// other flags: the processes build like a release, whatever the parent
// was built with.
func Build(ctx context.Context, moduleDir, dir string, pkgs ...string) ([]string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go command is needed to build the binaries: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = moduleDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	paths := make([]string, len(pkgs))
	for i, pkg := range pkgs {
		paths[i] = filepath.Join(dir, exeName(pkg))
		if _, err := os.Stat(paths[i]); err != nil {
			return nil, fmt.Errorf("after the build of %s: %w", pkg, err)
		}
	}
	return paths, nil
}

// exeName is the file name `go build -o DIR/` gives a main package: its
// last path element, or the one before a major version suffix (/v2).
func exeName(pkg string) string {
	elems := strings.Split(strings.TrimSuffix(pkg, "/"), "/")
	name := elems[len(elems)-1]
	if len(elems) > 1 && len(name) > 1 && name[0] == 'v' {
		if n, err := strconv.Atoi(name[1:]); err == nil && n >= 2 {
			name = elems[len(elems)-2]
		}
	}
	return name
}

// ModuleDir is the directory of the go.mod the go command sees from the
// current directory.
func ModuleDir(ctx context.Context) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to find the module: %w", err)
	}
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the rtc-sessions checkout")
	}
	return filepath.Dir(mod), nil
}
