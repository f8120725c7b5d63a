package server

import (
	"context"
	"errors"
	"time"

	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/control-plane/rollout"
	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/control-plane/xds"
)

// trainLoop runs a training round every TrainEvery.
func (s *Server) trainLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.TrainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.elector.Leading() {
				_, _ = s.train(ctx)
			}
		}
	}
}

// rolloutLoop judges the canary (on the leader) and makes what xDS serves
// match the store (on every replica), every Rollout.CheckEvery. While the
// store is unavailable nothing changes: xDS keeps its last good snapshot.
func (s *Server) rolloutLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Rollout.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.elector.Leading() && s.cfg.Trainer.Canary {
			d, err := rollout.Step(ctx, s.store, s.cfg.Rollout, time.Now())
			switch {
			case err != nil:
				s.log.Warn("judging the canary failed", "err", err)
			case d != nil:
				s.decisions.WithLabelValues(d.Outcome).Inc()
				s.log.Info("canary decided", "outcome", d.Outcome, "sha256", d.SHA256, "reason", d.Reason)
			}
		}
		if err := s.sync(ctx); err != nil && ctx.Err() == nil {
			s.syncFails.Inc()
			s.log.Debug("xDS keeps its last snapshot", "err", err)
		}
		s.syncWasmPlugin(ctx)
	}
}

// sync makes what xDS serves match the store: the release in force to
// every node, the canary (if one is under watch) to the canary share, each
// group its own section. Only the sections xDS does not hold are read.
func (s *Server) sync(ctx context.Context) error {
	if s.xds == nil {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	sha, err := s.store.Current(ctx)
	if err != nil || sha == "" {
		return errors.Join(err, errors.New("no model in force"))
	}
	c, err := s.store.Canary(ctx)
	if err != nil {
		return err
	}
	csha := ""
	if c != nil {
		csha = c.SHA256
	}
	if sha == s.xds.Version() && csha == s.xds.CanaryVersion() {
		return nil // served already: no need to read the releases
	}
	stable, err := s.release(ctx, sha)
	if err != nil {
		return err
	}
	var canary *xds.Release
	if c != nil {
		if canary, err = s.release(ctx, c.SHA256); err != nil {
			return err
		}
	}
	return s.xds.Apply(ctx, stable, canary, s.store)
}

// release reads a stored release as xDS serves it.
func (s *Server) release(ctx context.Context, version string) (*xds.Release, error) {
	r, err := s.store.Release(ctx, version)
	if err != nil {
		return nil, err
	}
	return &xds.Release{Version: r.Version, Sections: r.Sections}, nil
}

// train runs one round, one at a time, and logs and counts its outcome.
func (s *Server) train(ctx context.Context) (trainer.Report, error) {
	s.trainMu.Lock()
	defer s.trainMu.Unlock()
	cfg := s.cfg.Trainer
	if s.xds != nil {
		// The workloads whose Envoys connected are the mesh's: never
		// junk, whoever calls them.
		cfg.Registered = map[string]bool{}
		for _, g := range s.xds.GroupNames() {
			cfg.Registered[g] = true
		}
	}
	// What the exceptions in force let through is taught.
	if _, err := s.reloadExceptions(ctx, false); err != nil {
		s.log.Warn("training without the exceptions: not read", "err", err)
	}
	cfg.Exceptions = exception.Active(s.exceptionList(), time.Now())
	// Readiness estimates what enforce would deny as the filters are told to.
	cfg.Readiness.DenyReasons = s.cfg.XDS.Base.DenyReasons
	rep, err := trainer.Round(ctx, s.store, cfg, time.Now())
	if err == nil && (rep.Published || rep.Unchanged) {
		if rerr := s.reloadReadiness(ctx); rerr != nil {
			s.log.Warn("readiness not read", "err", rerr)
		}
	}
	s.capped.Add(float64(rep.Capped))
	switch {
	case err != nil:
		s.rounds.WithLabelValues("failed").Inc()
		s.log.Warn("training round failed", "err", err)
	case rep.Published:
		s.rounds.WithLabelValues("published").Inc()
		s.log.Info("model published", "sha256", rep.SHA256, "sections", rep.Sections, "changed", rep.Changed, "bytes", rep.Bytes,
			"largest_section", rep.Largest, "largest_of", rep.LargestOf, "learned", rep.Learned, "flagged_rate", rep.FlaggedRate, "canary", rep.Canary)
		for _, r := range rep.Refused {
			s.log.Warn("section refused: its workload keeps the section in force", "why", r)
		}
		if perr := s.sync(ctx); perr != nil {
			s.log.Error("rolling the model out over xDS failed", "err", perr)
		}
	case rep.Unchanged:
		s.rounds.WithLabelValues("unchanged").Inc()
		s.log.Info("the model trained is the one in force", "sha256", rep.SHA256, "refused", rep.Refused)
	default:
		s.rounds.WithLabelValues("rejected").Inc()
		s.log.Warn("candidate model rejected", "why", rep.Rejected, "sha256", rep.SHA256)
	}
	return rep, err
}
