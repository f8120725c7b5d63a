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
	if d.Suppressed != "" {
		return nil, nil
	}
	if d.Namespace == "" {
		return nil, fmt.Errorf("decision %s: %q is not a SPIFFE principal; RBAC matches mTLS principals", d.ID, d.Principal)
	}
	out := map[string]*rbacfilterv3.RBAC{}
	for _, t := range d.Deny {
		rules := &rbacv3.RBAC{
			Action: rbacv3.RBAC_DENY,
			Policies: map[string]*rbacv3.Policy{
				"meshward-quarantine-" + d.ID: {
					Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
					Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{
						Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: &matcherv3.StringMatcher{
							MatchPattern: &matcherv3.StringMatcher_Exact{Exact: d.Principal},
						}},
					}}},
				},
			},
		}
		f := &rbacfilterv3.RBAC{}
		if d.Mode == decide.Enforce {
			f.Rules, f.RulesStatPrefix = rules, "meshward_"
		} else {
			f.ShadowRules, f.ShadowRulesStatPrefix = rules, "meshward_"
		}
		if err := f.ValidateAll(); err != nil {
			return nil, fmt.Errorf("decision %s, target %s: %w", d.ID, t.Workload, err)
		}
		out[t.Workload] = f
	}
	return out, nil
}
