package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lateralTraffic is 600 ordinary requests between three SPIFFE callers and
// cart.shop, then caller-0 fanning out to three services it never called.
func lateralTraffic(t *testing.T, dir string) string {
	var b strings.Builder
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 600; i++ {
		fmt.Fprintf(&b, `{"ts":%q,"src":"spiffe://cluster.local/ns/shop/sa/caller-%d","dst":"cart.shop","method":"GET","path":"/items/%d","status":200,"label":"normal"}`+"\n",
			t0.Add(time.Duration(i)*100*time.Millisecond).Format(time.RFC3339Nano), i%3, i)
	}
	for i, dst := range []string{"payments.shop", "users.shop", "admin.shop"} {
		fmt.Fprintf(&b, `{"ts":%q,"src":"spiffe://cluster.local/ns/shop/sa/caller-0","dst":%q,"method":"GET","path":"/admin","status":403,"label":"lateral","attack_type":"lateral"}`+"\n",
			t0.Add(61*time.Second+time.Duration(i)*500*time.Millisecond).Format(time.RFC3339Nano), dst)
	}
	data := filepath.Join(dir, "lateral.jsonl")
	if err := os.WriteFile(data, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// TestRunWritesIncidentsAndPolicies: run --out lists the incident with its
// principal and evidence in report.json and writes its policies as YAML;
// policy list, show and release read that directory.
func TestRunWritesIncidentsAndPolicies(t *testing.T) {
	dir := t.TempDir()
	data := lateralTraffic(t, dir)
	outDir := filepath.Join(dir, "out")
	var out, errOut bytes.Buffer
	if err := Main([]string{"run", "--traffic", data, "--learn-until", "2026-11-25T10:00:50Z", "--runner", "native", "--out", outDir}, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var rep struct {
		Incidents []struct {
			ID        string            `json:"id"`
			Principal string            `json:"principal"`
			NewEdges  []json.RawMessage `json:"new_edges"`
			Evidence  []json.RawMessage `json:"evidence"`
		} `json:"incidents"`
		Policies []string `json:"policies"`
	}
	if err := json.Unmarshal(must(os.ReadFile(filepath.Join(outDir, "report.json"))), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Incidents) != 1 || rep.Incidents[0].Principal != "spiffe://cluster.local/ns/shop/sa/caller-0" || len(rep.Incidents[0].NewEdges) != 3 || len(rep.Incidents[0].Evidence) == 0 {
		t.Fatalf("incidents %+v\n%s", rep.Incidents, out.String())
	}
	id := rep.Incidents[0].ID
	yamlPath := filepath.Join(outDir, "policies", id+".yaml")
	if y := string(must(os.ReadFile(yamlPath))); strings.Count(y, "kind: AuthorizationPolicy") != 3 || !strings.Contains(y, "cluster.local/ns/shop/sa/caller-0") {
		t.Errorf("%s:\n%s", yamlPath, y)
	}

	pdir := filepath.Join(outDir, "policies")
	out.Reset()
	if err := Main([]string{"policy", "list", "--dir", pdir}, &out, &errOut); err != nil || !strings.Contains(out.String(), id) || !strings.Contains(out.String(), "dry-run") {
		t.Fatalf("policy list: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := Main([]string{"policy", "show", "--dir", pdir, id}, &out, &errOut); err != nil || !strings.Contains(out.String(), "admin.shop") {
		t.Fatalf("policy show: %v\n%s", err, out.String())
	}
	if err := Main([]string{"policy", "show", "--dir", pdir, "nope"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("showing an unknown quarantine succeeded")
	}
	if err := Main([]string{"policy", "release", "--dir", pdir, id}, &bytes.Buffer{}, &errOut); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(yamlPath); !os.IsNotExist(err) {
		t.Errorf("released, but %s remains", yamlPath)
	}
	for _, args := range [][]string{{"policy"}, {"policy", "frob"}, {"policy", "show"}, {"policy", "export"}, {"policy", "list", "extra"}} {
		if err := Main(args, &bytes.Buffer{}, &bytes.Buffer{}); ExitCode(err) != 2 {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}
