package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/filter/pluginconfig"
)

func TestTrainInspectConfig(t *testing.T) {
	dir := t.TempDir()
	var in strings.Builder
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&in, `{"src":"frontend","dst":"reviews","method":"GET","path":"/reviews/%d?lang=en"}`+"\n", i)
	}
	in.WriteString(`{"src":"evil","dst":"reviews","method":"GET","path":"/admin","label":"lateral"}` + "\n")
	in.WriteString("garbage\n")
	data := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(data, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model.bin")
	var out, errOut bytes.Buffer
	if err := Main([]string{"train", "-out", model, data}, &out, &errOut); err != nil {
		t.Fatalf("train: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "1 attacks not learned") || !strings.Contains(errOut.String(), "in.jsonl:302") {
		t.Errorf("train output %q / %q", out.String(), errOut.String())
	}
	out.Reset()
	if err := Main([]string{"model", "inspect", "-json", model}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var summary struct {
		Bytes     int `json:"bytes"`
		Workloads []struct {
			Name    string `json:"name"`
			Sources int    `json:"sources"`
		} `json:"workloads"`
	}
	if err := json.Unmarshal(out.Bytes(), &summary); err != nil {
		t.Fatal(err)
	}
	if summary.Bytes == 0 || len(summary.Workloads) != 2 || summary.Workloads[1].Name != "reviews" || summary.Workloads[1].Sources != 1 {
		t.Errorf("inspect %+v", summary)
	}
	out.Reset()
	if err := Main([]string{"model", "config", "-mode", "enforce", "-workload", "reviews", model}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	s, err := pluginconfig.Parse(out.Bytes(), "")
	if err != nil || s.Mode != pluginconfig.ModeEnforce || s.Section == nil || s.Model.SectionFor != "reviews" || len(s.Model.Workloads) != 1 {
		t.Fatalf("config does not parse as the filter would, with the section of reviews: %v %+v", err, s)
	}
	// The written configuration is itself a model file for inspect, which
	// says it holds a section.
	cfgPath := filepath.Join(dir, "plugin.json")
	_ = os.WriteFile(cfgPath, out.Bytes(), 0o644)
	out.Reset()
	if err := Main([]string{"model", "inspect", cfgPath}, &out, &errOut); err != nil || !strings.Contains(out.String(), "of workload reviews") {
		t.Errorf("inspect of a plugin config: %v\n%s", err, out.String())
	}
	// A whole model needs -workload; a section goes in for its own workload
	// only; a workload without a section gets the fallback.
	if err := Main([]string{"model", "config", model}, &bytes.Buffer{}, &errOut); err == nil || ExitCode(err) != 2 || !strings.Contains(err.Error(), "-workload") {
		t.Errorf("config of a whole model without -workload: %v", err)
	}
	out.Reset()
	if err := Main([]string{"model", "config", cfgPath}, &out, &errOut); err != nil {
		t.Errorf("config of a section: %v", err)
	} else if s, err := pluginconfig.Parse(out.Bytes(), ""); err != nil || s.Workload != "reviews" {
		t.Errorf("config of a section: %v %+v", err, s)
	}
	if err := Main([]string{"model", "config", "-workload", "ratings", cfgPath}, &bytes.Buffer{}, &errOut); err == nil || !strings.Contains(err.Error(), `section is for workload "reviews"`) {
		t.Errorf("config of reviews' section for ratings: %v", err)
	}
	out.Reset()
	if err := Main([]string{"model", "config", "-workload", "stranger.shop", model}, &out, &errOut); err != nil {
		t.Errorf("config for a workload without a section: %v", err)
	} else if s, err := pluginconfig.Parse(out.Bytes(), ""); err != nil || s.Model.SectionFor != "*" || s.Workload != "stranger.shop" {
		t.Errorf("config for a workload without a section: %v %+v, want the fallback", err, s)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"model"}, {"model", "x"}, {"train"}, {"model", "inspect"}, {"train", "-nope"}} {
		err := Main(args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || ExitCode(err) != 2 {
			t.Errorf("%v: err %v, want a usage error", args, err)
		}
	}
	if err := Main([]string{"model", "inspect", filepath.Join(t.TempDir(), "missing")}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || ExitCode(err) != 1 {
		t.Errorf("missing file: %v", err)
	}
	if err := Main([]string{"train", "-h"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Errorf("-h: %v", err)
	}
}

func TestReplayAndRun(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := 0; i < 600; i++ {
		fmt.Fprintf(&b, `{"src":"caller-%d","dst":"cart","method":"GET","path":"/items/%d?page=%d","label":"normal"}`+"\n", i%3, i, i%5)
	}
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, `{"src":"intruder","dst":"cart","method":"GET","path":"/admin/%d","label":"lateral","attack_type":"lateral"}`+"\n", i)
	}
	data := filepath.Join(dir, "traffic.jsonl")
	if err := os.WriteFile(data, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	outDir := filepath.Join(dir, "out")
	if err := Main([]string{"run", "--traffic", data, "--learn-until", "50%", "--runner", "native", "--out", outDir}, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var rep struct {
		Requests   int `json:"requests"`
		Flagged    int `json:"flagged"`
		Evaluation struct {
			AtThreshold struct{ TP, FP, FN int }
		} `json:"evaluation"`
	}
	raw, err := os.ReadFile(filepath.Join(outDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 305 || rep.Evaluation.AtThreshold.TP != 10 || rep.Evaluation.AtThreshold.FP != 0 {
		t.Errorf("report %+v\n%s", rep, out.String())
	}
	lines := strings.Count(string(must(os.ReadFile(filepath.Join(outDir, "scores.jsonl")))), "\n")
	if lines != 305 {
		t.Errorf("scores.jsonl has %d lines, want 305", lines)
	}
	// Replay the same traffic with a trained model, native.
	model := filepath.Join(dir, "m.bin")
	if err := Main([]string{"train", "-out", model, data}, &bytes.Buffer{}, &errOut); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Main([]string{"replay", "-model", model, "-report", filepath.Join(dir, "r.json"), data}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "replayed 610 requests through the native runner") || !strings.Contains(out.String(), "caught 10/10") {
		t.Errorf("replay summary:\n%s", out.String())
	}
	for _, args := range [][]string{{"run", "--traffic", data, "--learn-until", "150%"}, {"replay", data}, {"replay", "-model", model, "-runner", "gpu", data}} {
		if err := Main(args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || ExitCode(err) != 2 {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestServeBadKubeconfig: a kubeconfig that cannot be read stops serve
// before anything starts, with a usage error naming the file.
func TestServeBadKubeconfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "kubeconfig")
	var out, errOut bytes.Buffer
	err := Main([]string{"serve", "-kubeconfig", missing, "-collector-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, &out, &errOut)
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), missing) {
		t.Errorf("serve with a missing kubeconfig: %v", err)
	}
	// serve finds the API server as every command does: $KUBECONFIG too.
	t.Setenv("KUBECONFIG", missing)
	err = Main([]string{"serve", "-collector-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, &out, &errOut)
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), missing) {
		t.Errorf("serve with $KUBECONFIG naming a missing file: %v", err)
	}
}

// TestSectionBudget: train names the sections over -max-section-bytes, and
// model config refuses to print one.
func TestSectionBudget(t *testing.T) {
	dir := t.TempDir()
	var in strings.Builder
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&in, `{"src":"frontend","dst":"reviews","method":"GET","path":"/reviews/%d?lang=en"}`+"\n", i)
	}
	data := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(data, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model.bin")
	var out, errOut bytes.Buffer
	if err := Main([]string{"train", "-max-section-bytes", "1024", "-out", model, data}, &out, &errOut); err != nil {
		t.Fatalf("train: %v", err)
	}
	if !strings.Contains(errOut.String(), "the section of reviews") || !strings.Contains(errOut.String(), "over -max-section-bytes 1024") || !strings.Contains(out.String(), "largest section") {
		t.Errorf("train output %q / %q", out.String(), errOut.String())
	}
	err := Main([]string{"model", "config", "-workload", "reviews", "-max-section-bytes", "1024", model}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "the section of reviews") || !strings.Contains(err.Error(), "over -max-section-bytes 1024") {
		t.Errorf("model config over budget: %v", err)
	}
}
