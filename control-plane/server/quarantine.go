package server

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/store"
)

// tee stores a batch and, when quarantines are on, appends it to the
// observation stream the leader reads (whichever replica received it), in
// the same idempotent write: a retried batch is observed once.
type tee struct{ s *Server }

func (t tee) IngestBatch(ctx context.Context, b store.Batch) (bool, error) {
	b.Observe = t.s.cfg.Quarantine != nil
	dup, err := t.s.store.IngestBatch(ctx, b)
	if err == nil && !dup {
		t.s.countDecisions(b.Records)
	}
	return dup, err
}

// followLoop feeds the observation stream to the lateral-movement loop
// while this replica leads, from one detection window before it took the
// lead.
func (s *Server) followLoop(ctx context.Context) {
	after := ""
	for ctx.Err() == nil {
		leading := s.leads(ctx)
		if leading {
			// Detect on the model in force: when taking the lead, and
			// whenever it changes (trained, rolled back, by any replica).
			if err := s.detectOn(ctx); err != nil && after == "" {
				s.log.Warn("lateral-movement detection waits for a model", "err", err)
			}
		}
		loop := s.loop.Load()
		if loop == nil || !leading {
			after = ""
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.cfg.TickEvery):
			}
			continue
		}
		if after == "" {
			// A new leader replays the last detection horizon (what
			// the stream still holds of it), so what happened just
			// before it took the lead is not lost, slow fan-outs
			// included (the sinks are idempotent). Stream ids start
			// with milliseconds.
			after = strconv.FormatInt(time.Now().Add(-s.cfg.Detect.Horizon).UnixMilli(), 10) + "-0"
		}
		recs, next, err := s.store.ReadBatches(ctx, after, s.cfg.TickEvery)
		after = next
		if err != nil && ctx.Err() == nil {
			s.log.Warn("observation stream", "err", err)
			if len(recs) == 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(s.cfg.TickEvery):
				}
			}
		}
		var released map[string]time.Time
		if len(recs) > 0 {
			if released, err = s.store.Releases(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("reading the released quarantines", "err", err)
			}
		}
		for i := range recs {
			r := &recs[i]
			// Decisions run on the control plane's clock: when the
			// record was received, never the time it claims.
			at := r.Received
			if at.IsZero() {
				at = time.Now()
			}
			if rel, ok := released[r.Request.Source]; ok && !at.After(rel) {
				continue // weighed by the operator who released it
			}
			if _, err := loop.Observe(ctx, detect.Observation{TS: at, Request: &r.Request, Score: r.Score, Flagged: r.Flagged}); err != nil {
				s.log.Error("applying a quarantine failed", "principal", r.Request.Source, "err", err)
			}
		}
	}
}

// tickLoop promotes and expires quarantines on the wall clock while this
// replica leads, and makes a replica that does not lead publish the kept
// quarantines (RBAC over xDS).
func (s *Server) tickLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.TickEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if sy, ok := s.cfg.Quarantine.(interface{ Sync(context.Context) error }); ok && !s.elector.Leading() {
				// A replica that does not lead publishes the leader's
				// quarantines to its own Envoys (the leader's state is
				// what it wrote through).
				if err := sy.Sync(ctx); err != nil {
					s.log.Warn("quarantine sync", "err", err)
				}
			}
			if loop := s.loop.Load(); loop != nil && s.leads(ctx) {
				if err := loop.Tick(ctx, now); err != nil {
					s.log.Warn("quarantine tick", "err", err)
				}
			}
		}
	}
}

// leads says whether this replica leads and may act: in a term for which
// it rebuilt its quarantine state from where the sink writes (the last
// leader may have applied, released or expired since this replica last
// looked). A rebuild that fails is tried again on the next call; nothing
// is applied meanwhile.
func (s *Server) leads(ctx context.Context) bool {
	if !s.elector.Leading() {
		return false
	}
	term := s.elector.Term()
	s.termMu.Lock()
	defer s.termMu.Unlock()
	if s.rebuilt == term {
		return true
	}
	if rb, ok := s.cfg.Quarantine.(enforce.Rebuilder); ok {
		if err := rb.Rebuild(ctx); err != nil {
			s.log.Error("took the lead, but the standing quarantines could not be read: not acting yet", "err", err)
			return false
		}
		s.log.Info("took the lead: quarantine state rebuilt", "standing", s.cfg.Quarantine.Active())
	}
	s.rebuilt = term
	return true
}

// detectOn (re)starts lateral-movement detection on the model in force
// (its learned edges are what is known), unless it detects on it already.
func (s *Server) detectOn(ctx context.Context) error {
	if s.cfg.Quarantine == nil {
		return nil
	}
	sha, err := s.store.Current(ctx)
	if err != nil || sha == "" {
		return errors.Join(err, errors.New("no model in force"))
	}
	if have, _ := s.detectSHA.Load().(string); have == sha && s.loop.Load() != nil {
		return nil
	}
	m, err := s.store.LoadModel(ctx, sha)
	if err != nil {
		return err
	}
	if loop := s.loop.Load(); loop != nil {
		if err := loop.SetModel(s.cfg.Detect, m); err != nil {
			return err
		}
	} else {
		loop, err := enforce.New(s.cfg.Detect, s.cfg.Rules, m, s.cfg.Quarantine, s.log)
		if err != nil {
			return err
		}
		s.loop.Store(loop)
	}
	s.detectSHA.Store(sha)
	s.log.Info("lateral-movement detection on", "model", sha)
	return nil
}
