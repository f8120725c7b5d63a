package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
)

// replay -value-key-file scores a model the control plane trained as the
// mesh's filters do, natively and as .wasm: a colour never sent is a new
// value with the key, judged by its shape without it (a known shape) or
// with a key of another mesh (and said so). A bad key file is a usage error
// naming the flag, in replay and serve alike.
func TestReplayWithTheValueKey(t *testing.T) {
	dir := t.TempDir()
	const hexKey = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	k, err := models.ParseValueKey(hexKey)
	if err != nil {
		t.Fatal(err)
	}
	// The model as the control plane trains it, on records digested with k.
	cfg := models.ShapedTrainConfig()
	cfg.Now, cfg.ValueKeyID = time.Unix(1_700_000_000, 0), k.ID()
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	colours := []string{"red", "blue", "green", "lights"}
	for i := 0; i < 2000; i++ {
		r := models.Request{Method: "GET", Path: "/orders", Query: fmt.Sprintf("colour=%s&qty=%d", colours[i%4], 1+i%5), Source: "frontend", Destination: "shop"}
		s := models.ShapeRequestDigest(&r, &k)
		tr.Observe(&s)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, err := models.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "m.bin")
	keyFile, otherKey, badKey := filepath.Join(dir, "value.key"), filepath.Join(dir, "other.key"), filepath.Join(dir, "bad.key")
	for f, s := range map[string]string{model: string(b), keyFile: hexKey + "\n", otherKey: "00112233445566778899aabbccddeeff", badKey: "not a key"} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	traffic := filepath.Join(dir, "t.jsonl")
	var tb strings.Builder
	for _, c := range []string{"lights", "lightx"} {
		fmt.Fprintf(&tb, `{"src":"frontend","dst":"shop","method":"GET","path":"/orders?colour=%s&qty=2","label":"normal"}`+"\n", c)
	}
	if err := os.WriteFile(traffic, []byte(tb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	reasons := func(t *testing.T, args ...string) (known, tampered []string, stderr string) {
		t.Helper()
		scores := filepath.Join(t.TempDir(), "s.jsonl")
		var errOut bytes.Buffer
		if err := Main(append(append([]string{"replay", "-model", model, "-scores", scores}, args...), traffic), &bytes.Buffer{}, &errOut); err != nil {
			t.Fatalf("replay %v: %v\n%s", args, err, errOut.String())
		}
		f, err := os.Open(scores)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var lines [][]string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l struct{ Reasons []string }
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, l.Reasons)
		}
		if len(lines) != 2 {
			t.Fatalf("%d scores", len(lines))
		}
		return lines[0], lines[1], errOut.String()
	}
	for _, runner := range []string{"native", "wasm"} {
		t.Run(runner, func(t *testing.T) {
			args := []string{"-runner", runner}
			if runner == "wasm" {
				args = append(args, "-wasm", testWasm(t))
			}
			known, tampered, _ := reasons(t, append(args, "-value-key-file", keyFile)...)
			if slices.Contains(known, "new_value") || !slices.Contains(tampered, "new_value") {
				t.Errorf("with the key: lights %v, lightx %v; want lightx alone a new value", known, tampered)
			}
			_, tampered, _ = reasons(t, args...)
			if slices.Contains(tampered, "new_value") {
				t.Errorf("without the key: lightx %v, want it judged by its shape", tampered)
			}
			known, _, stderr := reasons(t, append(args, "-value-key-file", otherKey)...)
			if slices.Contains(known, "new_value") || !strings.Contains(stderr, "another key") {
				t.Errorf("another key: lights %v; stderr %q", known, stderr)
			}
		})
	}
	// model config writes the key beside the section, for a filter
	// configured by hand (plain Envoy without xDS).
	var doc bytes.Buffer
	if err := Main([]string{"model", "config", "-workload", "shop", "-value-key-file", keyFile, model}, &doc, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var c struct {
		ValueKey string `json:"value_key"`
	}
	if err := json.Unmarshal(doc.Bytes(), &c); err != nil || c.ValueKey != hexKey {
		t.Errorf("model config: value_key %q (%v), want %s", c.ValueKey, err, hexKey)
	}
	for _, args := range [][]string{
		{"model", "config", "-workload", "shop", "-value-key-file", badKey, model},
		{"replay", "-model", model, "-value-key-file", badKey, traffic},
		{"replay", "-model", model, "-value-key-file", filepath.Join(dir, "missing"), traffic},
		{"serve", "-value-key-file", badKey},
	} {
		err := Main(args, &bytes.Buffer{}, &bytes.Buffer{})
		if ExitCode(err) != 2 || !strings.Contains(err.Error(), "-value-key-file") {
			t.Errorf("%v: %v, want a usage error naming -value-key-file", args, err)
		}
	}
}
