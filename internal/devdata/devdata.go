// Package devdata finds the shared development data for data-driven tests,
// through the one setting the project uses: $MESHWARD_DATA, defaulting to
// ../shared/data beside the repository root (where CI has it).
package devdata

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// EnvVar names the setting.
const EnvVar = "MESHWARD_DATA"

// Dir returns the data directory, or the sub-directory sub of it, for a
// data-driven test. When MESHWARD_DATA is set the data must be there: a
// missing directory fails the test. When it is unset and the default is
// missing, the test is skipped, saying so loudly.
func Dir(t testing.TB, sub string) string {
	t.Helper()
	if d := os.Getenv(EnvVar); d != "" {
		dir := filepath.Join(d, sub)
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("%s=%s but %s cannot be read: %v", EnvVar, d, dir, err)
		}
		return dir
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("finding the repository root: %v", err)
	}
	dir := filepath.Join(root, "..", "shared", "data", sub)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("SKIPPED: %s is unset and the default data directory %s does not exist; set %s to run this data-driven test", EnvVar, dir, EnvVar)
	}
	return dir
}

// repoRoot finds the directory of the main module's go.mod above the
// working directory (a nested module's go.mod is passed over).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && len(b) > 0 && isMain(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/meshward/meshward above the working directory")
		}
		dir = parent
	}
}

func isMain(gomod []byte) bool {
	const want = "module github.com/meshward/meshward\n"
	return len(gomod) >= len(want) && string(gomod[:len(want)]) == want
}
