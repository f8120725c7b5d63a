package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// reshapings are the generated application's traffic as real traffic often
// comes (docs/evaluation.md's variants): each rewrites one request, in
// place, with its own random source. Each once made the model the control
// plane trains from records disagree with what scoring reads.
var reshapings = []struct {
	name    string
	reshape func(r map[string]any, rng *rand.Rand)
}{
	{"as generated", func(map[string]any, *rand.Rand) {}},
	{"every header left out", func(r map[string]any, _ *rand.Rand) { delete(r, "headers") }},
	{"14 browser headers added", func(r map[string]any, _ *rand.Rand) {
		r["headers"] = append(headersOf(r), browserHeaders...)
	}},
	{"a cookie of 1.5-2.5 KiB", func(r map[string]any, rng *rand.Rand) {
		hs := headersOf(r)
		for i := range hs {
			if hs[i][0] == "cookie" {
				hs[i][1] += "; prefs=" + token(rng, 1500+rng.IntN(1000))
			}
		}
		r["headers"] = hs
	}},
	{"form posts sent as JSON of 1.5-3 KiB", func(r map[string]any, rng *rand.Rand) {
		body, _ := r["body"].(string)
		hs := headersOf(r)
		if body == "" || !hasHeader(hs, "content-type", "application/x-www-form-urlencoded") {
			return
		}
		fields, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		obj := map[string]string{"comment": prose(rng, 1500+rng.IntN(1500))}
		for k, v := range fields {
			obj[k] = v[len(v)-1] // a padded payload is the last
		}
		b, _ := json.Marshal(obj)
		r["body"] = string(b)
		for i := range hs {
			if hs[i][0] == "content-type" {
				hs[i][1] = "application/json"
			}
		}
		r["headers"] = hs
	}},
	{"a 1.5-3 KiB state token on every GET", func(r map[string]any, rng *rand.Rand) {
		if r["method"] != "GET" {
			return
		}
		p := r["path"].(string)
		sep := "?"
		if strings.Contains(p, "?") {
			sep = "&"
		}
		r["path"] = p + sep + "state=" + token(rng, 1500+rng.IntN(1500))
	}},
	{"form posts whose first field is 5-7 KiB of text", func(r map[string]any, rng *rand.Rand) {
		body, _ := r["body"].(string)
		if body == "" || !hasHeader(headersOf(r), "content-type", "application/x-www-form-urlencoded") {
			return
		}
		r["body"] = "notes=" + url.QueryEscape(prose(rng, 5000+rng.IntN(2000))) + "&" + body
	}},
}

var browserHeaders = [][2]string{
	{"sec-ch-ua", `"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"`},
	{"sec-ch-ua-mobile", "?0"}, {"sec-ch-ua-platform", `"Windows"`},
	{"sec-fetch-dest", "document"}, {"sec-fetch-mode", "navigate"}, {"sec-fetch-site", "same-origin"},
	{"sec-fetch-user", "?1"}, {"upgrade-insecure-requests", "1"}, {"dnt", "1"},
	{"cache-control", "max-age=0"}, {"priority", "u=0, i"}, {"x-forwarded-proto", "https"},
	{"x-envoy-external-address", "203.0.113.7"}, {"x-b3-sampled", "0"},
}

func headersOf(r map[string]any) [][2]string {
	var hs [][2]string
	raw, _ := r["headers"].([]any)
	for _, h := range raw {
		if kv, ok := h.([]any); ok && len(kv) == 2 {
			hs = append(hs, [2]string{fmt.Sprint(kv[0]), fmt.Sprint(kv[1])})
		}
	}
	return hs
}

func hasHeader(hs [][2]string, name, prefix string) bool {
	for _, h := range hs {
		if h[0] == name && strings.HasPrefix(h[1], prefix) {
			return true
		}
	}
	return false
}

func token(rng *rand.Rand, n int) string {
	const al = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	b := make([]byte, n)
	for i := range b {
		b[i] = al[rng.IntN(len(al))]
	}
	return string(b)
}

func prose(rng *rand.Rand, n int) string {
	words := []string{"the", "order", "arrived", "late", "but", "thanks", "for", "a", "quick", "refund,", "would", "buy", "again.", "Colour", "was", "not", "as", "shown;", "size", "fine", "(mostly)", "won't", "Lyon", "42"}
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.String()
}

// TestRunOnReshapedTraffic: through the whole loop (filters in learn mode,
// collector, trainer on the records they ship, the model rolled out to
// filters that score), the generated application's traffic keeps its
// operating point however it is reshaped: the trainer learns from records
// what scoring reads of requests.
func TestRunOnReshapedTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("the whole loop seven times (about 40 s): skipped under -short (make unit); make test runs it")
	}
	wasm := testWasm(t)
	dir := t.TempDir()
	gen := filepath.Join(dir, "app.jsonl")
	var out bytes.Buffer
	if err := Main([]string{"gen", "-mode", "app", "-out", gen}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--learn-until (\S+)\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("gen did not say where learning ends: %s", out.String())
	}
	lines := strings.Split(strings.TrimSpace(string(must(os.ReadFile(gen)))), "\n")
	for i, v := range reshapings {
		t.Run(v.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var buf bytes.Buffer
			for _, l := range lines {
				var r map[string]any
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatal(err)
				}
				v.reshape(r, rng)
				b, err := json.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				buf.Write(append(b, '\n'))
			}
			traffic := filepath.Join(t.TempDir(), "traffic.jsonl")
			if err := os.WriteFile(traffic, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			// The loop, and meshward train's model on the same traffic
			// (--offline): what the loop should come close to.
			var figs [2]loopFigures
			for k, extra := range [][]string{nil, {"--offline"}} {
				runDir := filepath.Join(t.TempDir(), "run")
				var stderr bytes.Buffer
				args := append([]string{"run", "--traffic", traffic, "--learn-until", m[1], "--runner", "wasm", "--wasm", wasm, "--out", runDir}, extra...)
				if err := Main(args, &bytes.Buffer{}, &stderr); err != nil {
					t.Fatalf("run %v: %v\n%s", extra, err, stderr.String())
				}
				figs[k] = readFigures(t, filepath.Join(runDir, "report.json"))
			}
			loop, offline := figs[0], figs[1]
			t.Logf("loop %s; offline %s", loop, offline)
			// Within 0.003 of ROC AUC: the loop reads 0.0002-0.0009 below
			// the offline model since records carry value digests, and
			// 0.0038 below on the traffic as generated without them.
			if loop.fpr > 0.005 || loop.auc < offline.auc-0.003 || loop.tpr01 < offline.tpr01-0.1 {
				t.Errorf("the loop reads the traffic worse than meshward train's model: loop %s, offline %s (want FPR at the threshold ≤ 0.5 %%, ROC AUC within 0.003, TPR at 0.1 %% FPR within 10 points)", loop, offline)
			}
			// And either reads a closed application as #15 asks of one it
			// never saw: ROC AUC ≥ 0.999, TPR ≥ 90 % at 0.1 % FPR. Before
			// JSON bodies were read as fields, the JSON variant read
			// 0.9976 through the loop and 0.9985 offline.
			for k, f := range figs {
				if f.auc < 0.999 || f.tpr01 < 0.9 {
					t.Errorf("%s: %s, want ROC AUC ≥ 0.999 and TPR at 0.1 %% FPR ≥ 90 %%", []string{"loop", "offline"}[k], f)
				}
			}
		})
	}
}

// loopFigures are a run's ROC AUC, TPR at 0.1 % FPR and FPR at the
// threshold.
type loopFigures struct{ auc, tpr01, fpr float64 }

func (f loopFigures) String() string {
	return fmt.Sprintf("ROC AUC %.4f, TPR at 0.1%% FPR %.1f%%, FPR at the threshold %.3f%%", f.auc, 100*f.tpr01, 100*f.fpr)
}

func readFigures(t *testing.T, path string) loopFigures {
	t.Helper()
	var rep struct {
		Evaluation struct {
			ROCAUC, TPRAt01 float64
			AtThreshold     struct{ TP, FP, FN, TN int }
		} `json:"evaluation"`
	}
	if err := json.Unmarshal(must(os.ReadFile(path)), &rep); err != nil {
		t.Fatal(err)
	}
	e := rep.Evaluation
	return loopFigures{e.ROCAUC, e.TPRAt01, float64(e.AtThreshold.FP) / float64(max(1, e.AtThreshold.FP+e.AtThreshold.TN))}
}
