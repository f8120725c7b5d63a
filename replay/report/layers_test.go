package report

import (
	"os/exec"
	"strings"
	"testing"
)

// Replay sits beside the control plane, not above it: no replay package,
// nor its tests, imports anything under control-plane/ (the values both
// print, incidents and decisions, come from lateral/, below both). The
// go command says what each package really depends on.
func TestReplayImportsNothingFromTheControlPlane(t *testing.T) {
	const module = "github.com/meshward/meshward/"
	bin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	out, err := exec.Command(bin, "list", "-deps", "-test", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"replay/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		seen = seen || strings.HasPrefix(pkg, module+"replay/report")
		if strings.HasPrefix(pkg, module+"control-plane/") {
			t.Errorf("a replay package depends on %s", pkg)
		}
		if strings.HasPrefix(pkg, module+"replay/") {
			for _, imp := range strings.Fields(imports) {
				if strings.HasPrefix(imp, module+"control-plane/") {
					t.Errorf("%s imports %s", pkg, imp)
				}
			}
		}
	}
	if !seen {
		t.Fatalf("go list did not list replay/report: %s", out)
	}
}
