package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/internal/devdata"
	"github.com/meshward/meshward/replay/datasets"
)

// TestTrainTicketIsHeldOutInTime: the traces' calls are split by start
// time, the model learning the first hours and scored on the next, and the
// normal-only figures reach the JSON (no NaN from the undefined rankings).
func TestTrainTicketIsHeldOutInTime(t *testing.T) {
	dir := filepath.Dir(devdata.Dir(t, "trainticket_traces"))
	exs, _, err := loadTrainTicket(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := map[datasets.Split]int{}
	order := []datasets.Split{datasets.Train, datasets.Dev, datasets.Test}
	at := 0
	for _, e := range exs {
		for at < len(order) && e.Split != order[at] {
			at++
		}
		if at == len(order) {
			t.Fatalf("%s (%s) comes after a later split's calls", e.ID, e.Split)
		}
		n[e.Split]++
		if e.Attack {
			t.Fatalf("%s is labelled an attack", e.ID)
		}
	}
	if total := len(exs); total < 1000 || n[datasets.Train] < total*59/100 || n[datasets.Test] < total*19/100 {
		t.Fatalf("splits %v of %d calls, want 60/20/20", n, total)
	}
	out := filepath.Join(t.TempDir(), "eval.json")
	var buf bytes.Buffer
	if err := run([]string{"-split", "dev", "-crs=false", "-data", dir, "-datasets", trainTicket, "-json", out}, &buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "flagged at the threshold") {
		t.Errorf("output:\n%s", buf.String())
	}
	var rs []Result
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rs); err != nil || len(rs) != 2 || !rs[0].NormalOnly || rs[0].Eval.Normal != n[datasets.Dev] {
		t.Fatalf("json: %v, %+v", err, rs)
	}
}

// TestNoTrainTicketTracesIsAnError: a data directory without the traces
// says so, instead of scoring nothing.
func TestNoTrainTicketTracesIsAnError(t *testing.T) {
	if _, _, err := loadTrainTicket(t.TempDir()); err == nil || !strings.Contains(err.Error(), "trainticket_traces") {
		t.Fatalf("err = %v", err)
	}
}
