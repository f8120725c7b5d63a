package server

import (
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/meshward/meshward/control-plane/leader"
)

// newElector picks the election: a Kubernetes Lease when the server reaches
// an API server, a lock in Redis otherwise.
func (s *Server) newElector(identity string) error {
	if s.cfg.Kube == nil {
		el, err := leader.New(s.rdb, leader.Config{Key: s.cfg.Store.Prefix + ":leader", Identity: identity, TTL: 15 * time.Second})
		if err != nil {
			return err
		}
		s.elector, s.election = el, "redis-lock"
		return nil
	}
	cs, err := kubernetes.NewForConfig(s.cfg.Kube)
	if err != nil {
		return fmt.Errorf("kubernetes client for the leader Lease: %w", err)
	}
	el, err := leader.NewLease(cs, leader.DefaultLeaseConfig(s.cfg.LeaseNamespace, s.cfg.LeaseName, identity))
	if err != nil {
		return err
	}
	s.elector, s.election = el, "kubernetes-lease"
	return nil
}
