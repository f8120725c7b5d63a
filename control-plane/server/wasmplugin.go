package server

import (
	"context"
	"errors"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/wasmplugin"
)

// newWasmPlugin prepares the WasmPlugin writer when one is configured: the
// leader keeps one WasmPlugin per workload of the template's namespace on
// the release in force (never a canary: a WasmPlugin configures all of a
// workload's pods alike).
func (s *Server) newWasmPlugin(identity string) error {
	if s.cfg.WasmPlugin.Name == "" {
		return nil
	}
	if s.cfg.Kube == nil {
		return errors.New("-wasmplugin needs a Kubernetes API server (-kubeconfig, or the service account in a pod)")
	}
	wc := s.cfg.WasmPlugin
	if wc.Base.CollectorCluster == "" && wc.Base.CollectorToken == "" {
		// The collector keys xDS would serve, when given.
		wc.Base.CollectorCluster, wc.Base.CollectorToken = s.cfg.XDS.Base.CollectorCluster, s.cfg.XDS.Base.CollectorToken
	}
	if wc.Base.ValueKey == "" {
		wc.Base.ValueKey = s.cfg.XDS.Base.ValueKey
	}
	if wc.Identity == "" {
		wc.Identity = identity
	}
	w, err := wasmplugin.New(wc, s.cfg.Kube, s.log)
	if err != nil {
		return err
	}
	s.wasm = &wasmplugin.Syncer{W: w, Src: wasmSource{s.store}, Leading: s.elector.Leading, Overlay: s.wasmOverlay, Mode: s.wasmMode}
	s.log.Info("keeping one WasmPlugin per workload on the model in force", "template", w.Ref())
	return nil
}

// wasmSource reads releases for the WasmPlugin writer.
type wasmSource struct{ *store.Store }

// ReleaseSections implements wasmplugin.Source.
func (w wasmSource) ReleaseSections(ctx context.Context, version string) (map[string]string, error) {
	r, err := w.Release(ctx, version)
	if err != nil {
		return nil, err
	}
	return r.Sections, nil
}

// syncWasmPlugin writes each workload's section of the release in force
// into its WasmPlugin, on the leader, when it lacks it. Failures are
// logged; the WasmPlugins keep what they have.
func (s *Server) syncWasmPlugin(ctx context.Context) {
	if s.wasm == nil {
		return
	}
	res, err := s.wasm.Sync(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("the WasmPlugins keep what they have", "template", s.wasm.W.Ref(), "err", err)
	}
	for _, e := range res.Errors {
		s.log.Warn("a workload's WasmPlugin keeps what it has", "template", s.wasm.W.Ref(), "err", e)
	}
}
