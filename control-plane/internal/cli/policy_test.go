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

// TestRunDecidesAsTheServerDoes: run --traffic drives the control plane's
// lateral-movement loop on the traffic's clock. Three callers of one
// namespace fan out within a minute: the third decision waits for the
// namespace's rate limit (two a minute) and, once a minute of traffic has
// passed, stands; a quarantine grows as its incident reaches another
// destination.
func TestRunDecidesAsTheServerDoes(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	line := func(at time.Duration, caller int, dst, path string, status int) {
		fmt.Fprintf(&b, `{"ts":%q,"src":"spiffe://cluster.local/ns/shop/sa/caller-%d","dst":%q,"method":"GET","path":%q,"status":%d}`+"\n",
			t0.Add(at).Format(time.RFC3339Nano), caller, dst, path, status)
	}
	for i := 0; i < 600; i++ {
		line(time.Duration(i)*100*time.Millisecond, i%3, "cart.shop", fmt.Sprintf("/items/%d", i), 200)
	}
	for c := 0; c < 3; c++ {
		for j, dst := range []string{"payments.shop", "users.shop"} {
			line(61*time.Second+time.Duration(c)*time.Second+time.Duration(j)*100*time.Millisecond, c, dst, "/admin", 403)
		}
	}
	line(70*time.Second, 0, "admin.shop", "/admin", 403)
	for i := 0; i < 30; i++ {
		line(100*time.Second+time.Duration(i)*time.Second, 1, "cart.shop", fmt.Sprintf("/items/%d", i), 200)
	}
	data := filepath.Join(dir, "traffic.jsonl")
	if err := os.WriteFile(data, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	var out, errOut bytes.Buffer
	if err := Main([]string{"run", "--traffic", data, "--learn-until", "2026-11-25T10:00:50Z", "--runner", "native", "--out", outDir}, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var rep struct {
		Incidents []struct{ ID, Principal string } `json:"incidents"`
		Decisions []struct {
			ID, Principal, Suppressed string
			Held                      bool
			Deny                      []struct{ Workload string }
		} `json:"decisions"`
		Policies []string `json:"policies"`
	}
	if err := json.Unmarshal(must(os.ReadFile(filepath.Join(outDir, "report.json"))), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Incidents) != 3 {
		t.Fatalf("incidents %+v, want one per caller\n%s", rep.Incidents, out.String())
	}
	byPrincipal := map[string][]string{} // principal → its decisions, in order: "held", or the targets denied
	for _, d := range rep.Decisions {
		v := ""
		switch {
		case d.Held:
			v = "held"
		case d.Suppressed != "":
			v = "suppressed: " + d.Suppressed
		default:
			for _, t := range d.Deny {
				v += t.Workload + " "
			}
		}
		byPrincipal[d.Principal] = append(byPrincipal[d.Principal], strings.TrimSpace(v))
	}
	want := map[string][]string{
		"spiffe://cluster.local/ns/shop/sa/caller-0": {"admin.shop payments.shop users.shop"},
		"spiffe://cluster.local/ns/shop/sa/caller-1": {"payments.shop users.shop"},
		"spiffe://cluster.local/ns/shop/sa/caller-2": {"held", "payments.shop users.shop"},
	}
	if fmt.Sprint(byPrincipal) != fmt.Sprint(want) {
		t.Errorf("decisions by principal:\n%v\nwant\n%v", byPrincipal, want)
	}
	files, _ := filepath.Glob(filepath.Join(outDir, "policies", "*.yaml"))
	if len(files) != 3 {
		t.Errorf("%d policy files, want one per standing quarantine: %v", len(files), files)
	}
	if s := out.String(); strings.Count(s, "[dry-run policy]") != 3 {
		t.Errorf("the summary does not give each incident its standing dry run:\n%s", s)
	}
}
