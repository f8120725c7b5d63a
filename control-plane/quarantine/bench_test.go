package quarantine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/policy"
)

// BenchmarkDecisionToPolicy measures, against a real kube-apiserver, the
// time from handing the applier a decision to its AuthorizationPolicy
// arriving on a watch of the API server (what Istio's control plane
// sees), and reports the p50 and p99 over b.N decisions.
func BenchmarkDecisionToPolicy(b *testing.B) {
	env, ic := startKube(b, "train")
	a, err := New(Config{Rules: decide.DefaultRules()}, ic, env.Clientset, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := ic.SecurityV1().AuthorizationPolicies("train").Watch(ctx, metav1.ListOptions{LabelSelector: policy.OwnedSelector})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	seen := make(chan string, 16)
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			if m, err := metaName(ev.Object); err == nil {
				seen <- m
			}
		}
	}()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := decision(fmt.Sprintf("bench-%d", i), fmt.Sprintf("bench-%d", i), "ts-user.train")
		want := policy.Name(d.ID, "ts-user")
		start := time.Now()
		if err := a.Apply(ctx, d); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
		for got := ""; got != want; {
			select {
			case got = <-seen:
			case <-deadline:
				b.Fatalf("%s never arrived on the watch", want)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

func metaName(o any) (string, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return "", fmt.Errorf("%T is not an object", o)
	}
	return m.GetName(), nil
}
