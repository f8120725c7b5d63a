package wasmplugin_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshward/meshward/control-plane/wasmplugin"
	"github.com/meshward/meshward/filter/pluginconfig"
)

func TestParseRef(t *testing.T) {
	if ns, n, err := wasmplugin.ParseRef("default/meshward"); err != nil || ns != "default" || n != "meshward" {
		t.Errorf("default/meshward: %q %q %v", ns, n, err)
	}
	for _, bad := range []string{"", "meshward", "/meshward", "default/", "a/b/c"} {
		if _, _, err := wasmplugin.ParseRef(bad); err == nil || !strings.Contains(err.Error(), "want namespace/name") {
			t.Errorf("%q: got %v, want an error", bad, err)
		}
	}
}

// TestRefusedBeforeAnyCall: a configuration the filter's parser refuses is
// refused before the API server is asked anything (no clients here).
func TestRefusedBeforeAnyCall(t *testing.T) {
	m, sha := model(t, 1, 1)
	// A credential in the configuration: the filter refuses it, and the
	// writer never writes it.
	w, err := wasmplugin.NewForClients(wasmplugin.Config{Namespace: "default", Name: "meshward",
		Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor, CollectorCluster: "outbound|9090||c", CollectorToken: strings.Repeat("t", 32)}}, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Apply(context.Background(), sha, m)
	if !errors.Is(err, wasmplugin.ErrRefused) || !errors.Is(err, pluginconfig.ErrCollectorCluster) || !strings.Contains(err.Error(), "default/meshward") {
		t.Errorf("got %v, want ErrRefused naming the WasmPlugin and collector_cluster", err)
	}
	_, err = w.Apply(context.Background(), sha, []byte("not a model"))
	if !errors.Is(err, wasmplugin.ErrRefused) || !errors.Is(err, pluginconfig.ErrModel) {
		t.Errorf("a corrupt model: got %v, want ErrRefused and ErrModel", err)
	}
	// The Syncer reports a refused model once, not on every tick.
	src := &source{current: sha, models: map[string][]byte{sha: m}}
	sy := &wasmplugin.Syncer{W: w, Src: src, Leading: func() bool { return true }}
	if _, err := sy.Sync(context.Background()); !errors.Is(err, wasmplugin.ErrRefused) {
		t.Fatalf("first Sync: %v, want ErrRefused", err)
	}
	if r, err := sy.Sync(context.Background()); err != nil || r.Written {
		t.Errorf("second Sync: %+v, %v; want nothing", r, err)
	}
}
