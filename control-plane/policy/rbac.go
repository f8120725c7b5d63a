package policy

import (
	"fmt"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshward/meshward/control-plane/decide"
)

// RBAC translates a decision for meshes without Istio: one Envoy HTTP RBAC
// filter configuration per target workload, denying the principal. While
// the decision is a dry run the rule is a shadow rule (evaluated and
// counted under the shadow stat prefix, never enforced); enforced, it is a
// rule. The control plane delivers it by ECDS to the target's sidecars.
// Every message is validated before it is returned.
func RBAC(d decide.Decision) (map[string]*rbacfilterv3.RBAC, error) {
	return RBACFor([]decide.Decision{d})
}

// RBACFor merges standing decisions into one RBAC filter configuration per
// target workload: each decision is one named policy, among the rules when
// enforced and the shadow rules while a dry run. Suppressed decisions are
// skipped.
func RBACFor(ds []decide.Decision) (map[string]*rbacfilterv3.RBAC, error) {
	out := map[string]*rbacfilterv3.RBAC{}
	for _, d := range ds {
		if d.Suppressed != "" {
			continue
		}
		if err := check(d); err != nil {
			return nil, err
		}
		for _, t := range d.Deny {
			f := out[t.Workload]
			if f == nil {
				f = &rbacfilterv3.RBAC{}
				out[t.Workload] = f
			}
			rules := &f.ShadowRules
			if d.Mode == decide.Enforce {
				rules = &f.Rules
				f.RulesStatPrefix = "meshward_"
			} else {
				f.ShadowRulesStatPrefix = "meshward_"
			}
			if *rules == nil {
				*rules = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{}}
			}
			(*rules).Policies["meshward-quarantine-"+d.ID] = &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{
					Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: &matcherv3.StringMatcher{
						MatchPattern: &matcherv3.StringMatcher_Exact{Exact: d.Principal},
					}},
				}}},
			}
		}
	}
	for w, f := range out {
		if err := f.ValidateAll(); err != nil {
			return nil, fmt.Errorf("target %s: %w", w, err)
		}
	}
	return out, nil
}
