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
	def, app := gen.DefaultConfig(), gen.DefaultAppConfig()
	mode := fs.String("mode", "mesh", "mesh: a service graph of 16 services (lateral movement, injections, exfiltration); "+
		"app: one web application with a closed vocabulary of routes and parameters (renamed or added parameters, backup-file probes, injections)")
	out := fs.String("out", "sample.jsonl", "where to write the JSONL records")
	seed := fs.Uint64("seed", def.Seed, "seed: same seed, same traffic")
	requests := fs.Int("requests", 0, fmt.Sprintf("normal requests to generate (default %d for mesh, %d for app)", def.Requests, app.Requests))
	attacks := fs.Int("attacks", app.Attacks, "for -mode app: attack requests to generate")
	duration := fs.Duration("duration", def.Duration, "how long the traffic lasts")
	start := fs.String("start", def.Start.Format(time.RFC3339), "when the traffic starts (RFC 3339)")
	attackAt := fs.Float64("attack-at", def.AttackAt, "share of the duration after which attacks are injected")
	pcapOut := fs.String("pcap", "", "also write the traffic as a pcap capture (labels stay in the JSONL)")
	idsOut := fs.String("identities", "", "with -pcap: write the capture's address → workload map here (default: PCAP.identities)")
	if err := parse(fs, args); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339, *start)
	if err != nil {
		return fmt.Errorf("%w: -start: %v", ErrUsage, err)
	}
	var recs []*source.Record
	var cleanUntil time.Time
	switch *mode {
	case "mesh":
		cfg := def
		cfg.Seed, cfg.Duration, cfg.AttackAt, cfg.Start = *seed, *duration, *attackAt, t
		if *requests != 0 {
			cfg.Requests = *requests
		}
		g, err := gen.New(cfg)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUsage, err)
		}
		recs = g.Generate()
		cleanUntil = cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	case "app":
		cfg := app
		cfg.Seed, cfg.Duration, cfg.AttackAt, cfg.Start, cfg.Attacks = *seed, *duration, *attackAt, t, *attacks
		if *requests != 0 {
			cfg.Requests = *requests
		}
		g, err := gen.NewApp(cfg)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUsage, err)
		}
		recs = g.Generate()
		cleanUntil = cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	default:
		return fmt.Errorf("%w: -mode %q: want mesh or app", ErrUsage, *mode)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	w := source.NewJSONLWriter(bw)
	nAttacks := 0
	for _, r := range recs {
		if r.IsAttack() {
			nAttacks++
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
	clean := cleanUntil
	fmt.Fprintf(stdout, "wrote %s: %d requests (%d attacks, all after %s; learn before it with --learn-until %s)\n",
		*out, len(recs), nAttacks, clean.Format(time.RFC3339), clean.Format(time.RFC3339))
	return nil
}
