// Command eval measures meshward's detection on the public development
// datasets, beside the OWASP Core Rule Set (paranoia levels 1–4, through
// Coraza) on the same examples, and prints the figures with the command that
// reproduces them. It trains on each dataset's train split (normal examples
// only) and scores the chosen split: "dev" while developing, "test" (the
// default, never used for tuning) for the figures the README reports.
//
//	go run ./replay/cmd/eval [-data DIR] [-split test|dev] [-datasets a,b] [-crs=false] [-json out.json]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/crs"
	"github.com/meshward/meshward/replay/datasets"
)

// Result is one detector's figures on one dataset.
type Result struct {
	Dataset    string            `json:"dataset"`
	Detector   string            `json:"detector"`
	Eval       models.Evaluation `json:"evaluation"`
	NsPerReq   float64           `json:"ns_per_request"`
	ModelBytes int               `json:"model_bytes,omitempty"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "eval:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	defDir, _ := datasets.DefaultDir()
	dir := fs.String("data", defDir, "dataset directory (default $MESHWARD_DATA or ../shared/data)")
	split := fs.String("split", string(datasets.Test), "split to score: test (untouched; for reported figures) or dev (for development)")
	names := fs.String("datasets", strings.Join(datasets.Names(), ","), "comma-separated datasets")
	withCRS := fs.Bool("crs", true, "also run the OWASP Core Rule Set at paranoia levels 1-4")
	jsonOut := fs.String("json", "", "write every figure as JSON to this file")
	seed := fs.Uint64("seed", 1, "training seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *split != string(datasets.Test) && *split != string(datasets.Dev) {
		return fmt.Errorf("-split %q: want test or dev", *split)
	}
	fmt.Fprintf(out, "meshward evaluation — split %q, data %s\nreproduce: go run ./replay/cmd/eval -split %s -data %s (or make eval)\n\n", *split, *dir, *split, *dir)
	var results []Result
	for _, name := range strings.Split(*names, ",") {
		exs, rep, err := datasets.LoadWithReport(*dir, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rs, err := evalDataset(out, name, exs, rep, datasets.Split(*split), *withCRS, *seed)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, rs...)
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(*jsonOut, b, 0o644)
	}
	return nil
}

func evalDataset(out io.Writer, name string, exs []datasets.Example, rep datasets.Report, split datasets.Split, withCRS bool, seed uint64) ([]Result, error) {
	cfg := models.DefaultTrainConfig()
	cfg.Seed = seed
	cfg.Now = time.Unix(0, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		return nil, err
	}
	var eval []datasets.Example
	for i := range exs {
		switch {
		case exs[i].Split == datasets.Train && !exs[i].Attack:
			tr.Observe(&exs[i].Request)
		case exs[i].Split == split:
			eval = append(eval, exs[i])
		}
	}
	m, err := tr.Model()
	if err != nil {
		return nil, err
	}
	enc, err := models.Encode(m)
	if err != nil {
		return nil, err
	}
	learned, _, _, held := tr.Samples()
	var nNormal, nAttack int
	for _, e := range eval {
		if e.Attack {
			nAttack++
		} else {
			nNormal++
		}
	}
	fmt.Fprintf(out, "== %s: trained on %d normal requests (+%d held back for calibration); scoring %d normal and %d attacks (%s split); %s\n",
		name, learned, held, nNormal, nAttack, split, strings.TrimSpace(rep.String()))

	var results []Result
	xs := make([]models.Labelled, len(eval))
	scratch := new(models.Scratch)
	start := time.Now()
	for i := range eval {
		w := m.Workload(eval[i].Request.Destination)
		v := w.ScoreWith(&eval[i].Request, scratch)
		xs[i] = models.Labelled{Score: v.Score, Attack: eval[i].Attack, Type: eval[i].AttackType}
	}
	ns := float64(time.Since(start).Nanoseconds()) / float64(max(1, len(eval)))
	results = append(results, Result{Dataset: name, Detector: "meshward", Eval: models.Evaluate(xs, m.Meta.Threshold), NsPerReq: ns, ModelBytes: len(enc)})

	if withCRS {
		for pl := crs.MinParanoia; pl <= crs.MaxParanoia; pl++ {
			eng, err := crs.New(pl)
			if err != nil {
				return nil, err
			}
			cx := make([]models.Labelled, len(eval))
			start := time.Now()
			for i := range eval {
				score, _, err := eng.Score(&eval[i].Request)
				if err != nil {
					return nil, fmt.Errorf("CRS PL%d on %s: %w", pl, eval[i].ID, err)
				}
				cx[i] = models.Labelled{Score: float64(score), Attack: eval[i].Attack, Type: eval[i].AttackType}
			}
			ns := float64(time.Since(start).Nanoseconds()) / float64(max(1, len(eval)))
			// CRS blocks at an inbound anomaly score of 5 or more.
			results = append(results, Result{Dataset: name, Detector: fmt.Sprintf("CRS PL%d", pl), Eval: models.Evaluate(cx, 4.5), NsPerReq: ns})
		}
	}
	printTable(out, results)
	return results, nil
}

func printTable(out io.Writer, rs []Result) {
	fmt.Fprintf(out, "%-10s %8s %8s %9s %9s %9s %9s %7s %7s %11s\n", "detector", "ROC AUC", "PR AUC", "TPR@0.1%", "TPR@1%", "precision", "recall", "FPR", "FP", "µs/request")
	for _, r := range rs {
		e := r.Eval
		fmt.Fprintf(out, "%-10s %8.4f %8.4f %8.1f%% %8.1f%% %9.4f %9.4f %6.2f%% %7d %11.1f\n", r.Detector, e.ROCAUC, e.PRAUC,
			100*e.TPRAt01, 100*e.TPRAt1, e.AtThreshold.Precision(), e.AtThreshold.Recall(), 100*e.AtThreshold.FPR(), e.AtThreshold.FP, r.NsPerReq/1000)
	}
	if len(rs) > 0 && len(rs[0].Eval.PerType) > 0 {
		fmt.Fprintf(out, "meshward per attack type (recall at its threshold / at 0.1%% FPR):")
		for _, t := range rs[0].Eval.PerType {
			fmt.Fprintf(out, " %s %d/%d (%.1f%%/%.1f%%);", t.Type, t.Caught, t.Total, 100*t.At, 100*t.RecallAt01)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out)
}
