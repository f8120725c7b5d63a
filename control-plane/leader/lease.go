package leader

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Leader is what the control plane needs of an election, whichever backs
// it: a Redis lock (Elector) or a Kubernetes Lease (LeaseElector).
type Leader interface {
	// Leading reports whether this replica leads now.
	Leading() bool
	// Changes delivers every change of leadership (true: became leader).
	Changes() <-chan bool
	// Run campaigns until ctx ends, then gives leadership up.
	Run(ctx context.Context)
	// Check asks the lock's keeper (Redis, the API server) whether this
	// replica's term still holds it, now; a write is made only when it
	// returns nil (fencing).
	Check(ctx context.Context) error
	// Term counts the terms this replica won: a change means it lost the
	// lead and took it again, and must reload what another leader may
	// have done meanwhile.
	Term() uint64
}

var (
	_ Leader = (*Elector)(nil)
	_ Leader = (*LeaseElector)(nil)
)

// LeaseConfig is everything a Lease election takes.
type LeaseConfig struct {
	// Namespace and Name name the coordination.k8s.io/v1 Lease; Identity
	// names this replica (it is the Lease's holderIdentity while leading).
	Namespace, Name, Identity string
	// LeaseDuration is how long others wait after the last renewal before
	// taking over (whole seconds: the Lease stores seconds); the leader
	// steps down when it has not renewed within RenewDeadline, and every
	// replica retries every RetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultLeaseConfig returns the usual Kubernetes controller timings (15 s
// lease, 10 s renew deadline, 2 s retry) for the named Lease.
func DefaultLeaseConfig(namespace, name, identity string) LeaseConfig {
	return LeaseConfig{Namespace: namespace, Name: name, Identity: identity,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
}

// Validate reports every problem with the configuration.
func (c LeaseConfig) Validate() error {
	var errs []error
	if c.Namespace == "" || c.Name == "" || c.Identity == "" {
		errs = append(errs, fmt.Errorf("leader: the Lease's namespace %q (-lease-namespace), name %q (-lease-name) and holder Identity %q are required", c.Namespace, c.Name, c.Identity))
	}
	if c.LeaseDuration < time.Second || c.LeaseDuration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("leader: lease duration %v must be whole seconds, at least 1s", c.LeaseDuration))
	}
	if c.RenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(c.RetryPeriod)) || c.RenewDeadline >= c.LeaseDuration || c.RetryPeriod <= 0 {
		errs = append(errs, fmt.Errorf("leader: need lease duration (%v) > renew deadline (%v) > %.1f × retry period (%v) > 0",
			c.LeaseDuration, c.RenewDeadline, leaderelection.JitterFactor, c.RetryPeriod))
	}
	return errors.Join(errs...)
}

// LeaseElector campaigns for a Kubernetes Lease (client-go's leader
// election over a LeaseLock: compare-and-swap on the Lease's resource
// version), and releases it when its context ends so another replica takes
// over at once instead of after LeaseDuration.
type LeaseElector struct {
	cfg     LeaseConfig
	lec     leaderelection.LeaderElectionConfig
	lock    *timedLock
	leases  coordinationv1client.LeaseInterface
	mu      sync.Mutex
	leading bool
	term    uint64
	changed chan bool
}

// Term counts the terms won.
func (e *LeaseElector) Term() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term
}

// timedLock is the Lease lock, noting when the last write of the record
// that succeeded was begun: the others count the Lease's duration from
// when they see that write, which is no earlier.
type timedLock struct {
	resourcelock.Interface
	mu      sync.Mutex
	renewed time.Time
}

func (l *timedLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	start := time.Now()
	err := l.Interface.Create(ctx, ler)
	l.note(start, err, ler)
	return err
}

func (l *timedLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	start := time.Now()
	err := l.Interface.Update(ctx, ler)
	l.note(start, err, ler)
	return err
}

func (l *timedLock) note(start time.Time, err error, ler resourcelock.LeaderElectionRecord) {
	if err != nil || ler.HolderIdentity != l.Identity() {
		return
	}
	l.mu.Lock()
	l.renewed = start
	l.mu.Unlock()
}

func (l *timedLock) lastRenewed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed
}

// NewLease returns a Lease elector, or the configuration's problem.
func NewLease(cs kubernetes.Interface, cfg LeaseConfig) (*LeaseElector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.Namespace, cfg.Name,
		cs.CoreV1(), cs.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: cfg.Identity})
	if err != nil {
		return nil, fmt.Errorf("leader: lease %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	e := &LeaseElector{cfg: cfg, changed: make(chan bool, 16), lock: &timedLock{Interface: lock},
		leases: cs.CoordinationV1().Leases(cfg.Namespace)}
	e.lec = leaderelection.LeaderElectionConfig{
		Lock:            e.lock,
		Name:            cfg.Namespace + "/" + cfg.Name,
		LeaseDuration:   cfg.LeaseDuration,
		RenewDeadline:   cfg.RenewDeadline,
		RetryPeriod:     cfg.RetryPeriod,
		ReleaseOnCancel: true,
	}
	// client-go checks the timings too; ask it now, not in Run.
	if _, err := leaderelection.NewLeaderElector(e.callbacks(context.Background())); err != nil {
		return nil, fmt.Errorf("leader: lease %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	return e, nil
}

// callbacks is the election's configuration with callbacks that record
// leadership; run is the campaign's context.
func (e *LeaseElector) callbacks(run context.Context) leaderelection.LeaderElectionConfig {
	lec := e.lec
	lec.Callbacks = leaderelection.LeaderCallbacks{
		OnStartedLeading: func(term context.Context) { e.set(true, term) },
		OnStoppedLeading: func() { e.set(false, run) },
	}
	return lec
}

// Leading reports whether this replica holds the Lease now: client-go
// says it leads, and its last renewal began less than RenewDeadline ago on
// the local clock — shorter than the Lease, so it stops before another
// replica may take over, even when a renewal hangs.
func (e *LeaseElector) Leading() bool {
	e.mu.Lock()
	leading := e.leading
	e.mu.Unlock()
	return leading && time.Since(e.lock.lastRenewed()) < e.cfg.RenewDeadline
}

// Check reads the Lease from the API server: this replica must be its
// holder, and its local deadline not passed.
func (e *LeaseElector) Check(ctx context.Context) error {
	if !e.Leading() {
		return ErrNotLeader
	}
	l, err := e.leases.Get(ctx, e.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("checking the leader Lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	if h := l.Spec.HolderIdentity; h == nil || *h != e.cfg.Identity {
		return ErrNotLeader
	}
	return nil
}

// Changes delivers every change of leadership (true: became leader).
func (e *LeaseElector) Changes() <-chan bool { return e.changed }

// set records leadership; a start whose term already ended (term done)
// does not count, whatever order client-go's callbacks run in.
func (e *LeaseElector) set(leading bool, term context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if leading && term.Err() != nil {
		return
	}
	if e.leading == leading {
		return
	}
	if leading {
		e.term++
	}
	e.leading = leading
	select {
	case e.changed <- leading:
	default:
	}
}

// Run campaigns until ctx ends: after losing the Lease (another replica
// took it, or renewals failed past RenewDeadline) it campaigns again. When
// ctx ends it releases the Lease and returns.
func (e *LeaseElector) Run(ctx context.Context) {
	defer e.set(false, ctx)
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(e.callbacks(ctx))
		if err != nil { // NewLease accepted the same configuration
			return
		}
		le.Run(ctx)
	}
}
