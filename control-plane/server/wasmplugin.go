package server

import (
	"context"
	"errors"

	"github.com/meshward/meshward/control-plane/wasmplugin"
)

// newWasmPlugin prepares the WasmPlugin writer when one is configured: the
// leader keeps that WasmPlugin's pluginConfig on the model in force (never
// a canary: a WasmPlugin configures every workload alike).
func (s *Server) newWasmPlugin(identity string) error {
	if s.cfg.WasmPlugin.Name == "" {
		return nil
	}
	if s.cfg.Kube == nil {
		return errors.New("-wasmplugin needs a Kubernetes API server (-kubeconfig, or the service account in a pod)")
	}
	wc := s.cfg.WasmPlugin
	if wc.Base.Mode == "" { // the filter configuration xDS would serve
		wc.Base = s.cfg.XDS.Base
	}
	if wc.Identity == "" {
		wc.Identity = identity
	}
	w, err := wasmplugin.New(wc, s.cfg.Kube, s.log)
	if err != nil {
		return err
	}
	s.wasm = &wasmplugin.Syncer{W: w, Src: s.store, Leading: s.elector.Leading}
	s.log.Info("keeping the WasmPlugin on the model in force", "wasmplugin", w.Ref())
	return nil
}

// syncWasmPlugin writes the model in force into the WasmPlugin, on the
// leader, when it lacks it. Failures are logged; the WasmPlugin keeps its
// last model.
func (s *Server) syncWasmPlugin(ctx context.Context) {
	if s.wasm == nil {
		return
	}
	if _, err := s.wasm.Sync(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("the WasmPlugin keeps its last model", "wasmplugin", s.wasm.W.Ref(), "err", err)
	}
}
