package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshward/meshward/replay/gen"
	"github.com/meshward/meshward/replay/source"
)

func writePcap(path, idsPath string, recs []*source.Record) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	pw, err := source.NewPcapWriter(bw)
	if err == nil {
		for _, r := range recs {
			if err = pw.Write(r); err != nil {
				break
			}
		}
		if err == nil {
			err = pw.Close()
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.WriteFile(idsPath, []byte(pw.Addresses()), 0o644)
}

func genTraffic(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gen", stderr)
	def := gen.DefaultConfig()
	out := fs.String("out", "sample.jsonl", "where to write the JSONL records")
	seed := fs.Uint64("seed", def.Seed, "seed: same seed, same traffic")
	requests := fs.Int("requests", def.Requests, "normal requests to generate")
	duration := fs.Duration("duration", def.Duration, "how long the traffic lasts")
	start := fs.String("start", def.Start.Format(time.RFC3339), "when the traffic starts (RFC 3339)")
	attackAt := fs.Float64("attack-at", def.AttackAt, "share of the duration after which attacks are injected")
	pcapOut := fs.String("pcap", "", "also write the traffic as a pcap capture (labels stay in the JSONL)")
	idsOut := fs.String("identities", "", "with -pcap: write the capture's address → workload map here (default: PCAP.identities)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := def
	cfg.Seed, cfg.Requests, cfg.Duration, cfg.AttackAt = *seed, *requests, *duration, *attackAt
	t, err := time.Parse(time.RFC3339, *start)
	if err != nil {
		return fmt.Errorf("%w: -start: %v", ErrUsage, err)
	}
	cfg.Start = t
	g, err := gen.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	recs := g.Generate()
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	w := source.NewJSONLWriter(bw)
	attacks := 0
	for _, r := range recs {
		if r.IsAttack() {
			attacks++
		}
		if err := w.Write(r); err != nil {
			f.Close()
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if *pcapOut != "" {
		if *idsOut == "" {
			*idsOut = *pcapOut + ".identities"
		}
		if err := writePcap(*pcapOut, *idsOut, recs); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s and %s (replay it with -identities %s)\n", *pcapOut, *idsOut, *idsOut)
	}
	clean := cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	fmt.Fprintf(stdout, "wrote %s: %d requests (%d attacks, all after %s; learn before it with --learn-until %s)\n",
		*out, len(recs), attacks, clean.Format(time.RFC3339), clean.Format(time.RFC3339))
	return nil
}
