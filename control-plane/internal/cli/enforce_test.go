package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// heldOutTraffic is a held-out-style day: cart.shop learns its callers and
// routes first; then a benign release makes a new workload (orders) call it
// at a steady rate, a compromised caller fans out to workloads it never
// called, and one caller sends injections on a route cart.shop knows.
func heldOutTraffic(t *testing.T, dir string) (path, learnUntil string) {
	t.Helper()
	var b strings.Builder
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	line := func(at time.Duration, src, dst, path string, status int, label string) {
		l := ""
		if label != "" {
			l = fmt.Sprintf(`,"label":%q`, label)
		}
		fmt.Fprintf(&b, `{"ts":%q,"src":"spiffe://cluster.local/ns/shop/sa/%s","dst":%q,"method":"GET","path":%q,"status":%d%s}`+"\n",
			t0.Add(at).Format(time.RFC3339Nano), src, dst, path, status, l)
	}
	langs := []string{"en", "fr", "de"}
	for i := 0; i < 1500; i++ {
		line(time.Duration(i)*40*time.Millisecond, fmt.Sprintf("web-%d", i%3), "cart.shop", fmt.Sprintf("/items/%d?lang=%s", i%400, langs[i%3]), 200, "normal")
	}
	at := 61 * time.Second
	// The benign release: a new caller, steady, ordinary requests.
	for i := 0; i < 200; i++ {
		line(at+time.Duration(i)*50*time.Millisecond, "orders", "cart.shop", fmt.Sprintf("/items/%d?lang=%s", i%400, langs[i%3]), 200, "normal")
	}
	// Ordinary traffic goes on.
	for i := 0; i < 300; i++ {
		line(at+time.Duration(i)*40*time.Millisecond, fmt.Sprintf("web-%d", i%3), "cart.shop", fmt.Sprintf("/items/%d?lang=%s", i%400, langs[i%3]), 200, "normal")
	}
	// The compromised caller fans out.
	for j, dst := range []string{"payments.shop", "users.shop", "admin.shop"} {
		line(at+5*time.Second+time.Duration(j)*100*time.Millisecond, "web-1", dst, "/admin", 403, "lateral")
	}
	// Injections on a known route, from a known caller.
	for i := 0; i < 5; i++ {
		line(at+8*time.Second+time.Duration(i)*time.Second, "web-0", "cart.shop", fmt.Sprintf("/items/%d?lang=en%%27%%20union%%20select%%20password%%20from%%20users--", i), 200, "sqli")
	}
	path = filepath.Join(dir, "day.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, t0.Add(at - time.Second).Format(time.RFC3339)
}

type scoreLine struct {
	Src, Dst, Path, Label string
	Flagged               bool
	Denied                *bool  `json:"denied"`
	DenyReason            string `json:"deny_reason"`
}

func readScores(t *testing.T, path string) []scoreLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []scoreLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l scoreLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// TestRunEnforceIsGraduated: meshward run --mode enforce on a held-out-style
// day denies none of the benign release's requests (new caller: flagged,
// left to the detector), still denies the injections inline, says so on
// every scores line, and still quarantines the compromised caller.
func TestRunEnforceIsGraduated(t *testing.T) {
	dir := t.TempDir()
	data, until := heldOutTraffic(t, dir)
	// Natively, and through the control plane with the compiled filter
	// served in enforce mode over xDS (its own 403s read back).
	for _, kind := range []string{"native", "wasm"} {
		t.Run(kind, func(t *testing.T) {
			args := []string{"run", "--traffic", data, "--learn-until", until, "--runner", kind, "--mode", "enforce"}
			if kind == "wasm" {
				args = append(args, "--wasm", testWasm(t))
			}
			rel := runEnforce(t, args, true)
			if rel != 0 {
				t.Errorf("the benign release got %d denials, want 0", rel)
			}
		})
	}
	// The control: with structural novelty denied too, the release breaks.
	t.Run("deny structure", func(t *testing.T) {
		rel := runEnforce(t, []string{"run", "--traffic", data, "--learn-until", until, "--runner", "native", "--mode", "enforce", "--deny-reasons", "default,structure"}, false)
		if rel == 0 {
			t.Error("deny_reasons default,structure denied none of the release's requests: the test cannot tell the policies apart")
		}
	})
}

// runEnforce runs meshward run with args and checks its scores and report:
// every line says denied, the injections are denied for a content or value
// reason, the compromised caller is quarantined. It returns how many of the
// benign release's requests were denied.
func runEnforce(t *testing.T, args []string, graduated bool) int {
	t.Helper()
	outDir := filepath.Join(t.TempDir(), "out")
	var out, errOut bytes.Buffer
	if err := Main(append(args, "--out", outDir), &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	lines := readScores(t, filepath.Join(outDir, "scores.jsonl"))
	var releaseFlagged, releaseDenied, injDenied, injections, denied int
	for _, l := range lines {
		if l.Denied == nil {
			t.Fatalf("a scores line without \"denied\" in enforce mode: %+v", l)
		}
		if *l.Denied {
			denied++
		}
		switch {
		case strings.HasSuffix(l.Src, "/sa/orders"):
			if l.Flagged {
				releaseFlagged++
			}
			if *l.Denied {
				releaseDenied++
			}
		case l.Label == "sqli":
			injections++
			if *l.Denied {
				injDenied++
				if graduated && (l.DenyReason == "" || strings.HasPrefix(l.DenyReason, "new_")) {
					t.Errorf("an injection denied for %q, want a content or value reason", l.DenyReason)
				}
			}
		}
	}
	if injections != 5 || injDenied != injections {
		t.Errorf("injections denied %d of %d", injDenied, injections)
	}
	t.Logf("benign release: %d of 200 flagged, %d denied; injections: %d of %d denied", releaseFlagged, releaseDenied, injDenied, injections)
	var rep struct {
		Enforce struct {
			Denied int `json:"denied"`
		} `json:"enforce"`
		Decisions []struct{ Principal string } `json:"decisions"`
	}
	if err := json.Unmarshal(must(os.ReadFile(filepath.Join(outDir, "report.json"))), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Enforce.Denied != denied {
		t.Errorf("report: denied %d, scores lines %d", rep.Enforce.Denied, denied)
	}
	quarantined := false
	for _, d := range rep.Decisions {
		quarantined = quarantined || strings.HasSuffix(d.Principal, "/sa/web-1")
	}
	if !quarantined {
		t.Errorf("the compromised caller was not quarantined: %+v\n%s", rep.Decisions, out.String())
	}
	return releaseDenied
}

// TestReplayEnforceAndExceptions: replay -mode enforce writes "denied" on
// every line; an exception file lets the excepted requests through; bad
// flags are refused by name.
func TestReplayEnforceAndExceptions(t *testing.T) {
	dir := t.TempDir()
	data, until := heldOutTraffic(t, dir)
	// A model from the learning part (meshward train), replayed on the day.
	var out, errOut bytes.Buffer
	modelPath := filepath.Join(dir, "model.bin")
	learn := filepath.Join(dir, "learn.jsonl")
	var kept []string
	for _, l := range strings.Split(string(must(os.ReadFile(data))), "\n") {
		if l != "" && l[8:28] < until[:20] {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(learn, []byte(strings.Join(kept, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Main([]string{"train", "-out", modelPath, learn}, &out, &errOut); err != nil {
		t.Fatalf("train: %v\n%s", err, errOut.String())
	}
	scores := filepath.Join(dir, "scores.jsonl")
	if err := Main([]string{"replay", "-model", modelPath, "-mode", "enforce", "-scores", scores, data}, &out, &errOut); err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut.String())
	}
	denied := 0
	for _, l := range readScores(t, scores) {
		if l.Denied == nil {
			t.Fatalf("a line without denied: %+v", l)
		}
		if *l.Denied {
			denied++
		}
	}
	if denied == 0 {
		t.Fatal("enforce denied nothing: the injections should be")
	}
	exc := filepath.Join(dir, "exceptions.json")
	if err := os.WriteFile(exc, []byte(`{"exceptions":[{"id":"lang-ok","workload":"cart.shop","route":"/items/*","param":"lang","expires":"2099-01-01T00:00:00Z","author":"a","reason":"r"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Main([]string{"replay", "-model", modelPath, "-mode", "enforce", "-exceptions", exc, "-scores", scores, data}, &out, &errOut); err != nil {
		t.Fatalf("replay with exceptions: %v\n%s", err, errOut.String())
	}
	after := 0
	for _, l := range readScores(t, scores) {
		if *l.Denied {
			after++
		}
	}
	if after >= denied {
		t.Errorf("the exception for lang let nothing through: %d denied, %d before", after, denied)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-mode", "block"}, "-mode"},
		{[]string{"-mode", "enforce", "-deny-reasons", "bogus"}, "-deny-reasons"},
		{[]string{"-deny-reasons", "default"}, "-mode enforce"},
	} {
		err := Main(append(append([]string{"replay", "-model", modelPath}, c.args...), data), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
