package policy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/decide"
)

// TestRBACGolden translates every testdata/*.in.yaml decision to Envoy RBAC
// and compares it with *.rbac.json (a map of workload → filter config),
// decoded back into the protos so the comparison does not depend on how
// protojson lays out its text (regenerate with -update).
func TestRBACGolden(t *testing.T) {
	ins, _ := filepath.Glob("testdata/*.in.yaml")
	for _, in := range ins {
		t.Run(filepath.Base(in), func(t *testing.T) {
			raw, _ := os.ReadFile(in)
			var d decide.Decision
			if err := yaml.Unmarshal(raw, &d); err != nil {
				t.Fatal(err)
			}
			out := strings.TrimSuffix(in, ".in.yaml") + ".rbac.json"
			got, err := RBAC(d)
			if *update {
				writeRBACGolden(t, out, got, err)
			}
			want, wantErr := readRBACGolden(t, out)
			if err != nil || wantErr != "" {
				if err == nil || err.Error() != wantErr {
					t.Fatalf("error %v, want %q", err, wantErr)
				}
				return
			}
			if len(got) != len(want) {
				t.Fatalf("%d configs, want %d", len(got), len(want))
			}
			for w, g := range got {
				if !proto.Equal(g, want[w]) {
					t.Errorf("%s: got %v\nwant %v", w, g, want[w])
				}
			}
		})
	}
}

func writeRBACGolden(t *testing.T, path string, got map[string]*rbacfilterv3.RBAC, err error) {
	doc := map[string]json.RawMessage{}
	if err != nil {
		b, _ := json.Marshal(err.Error())
		doc["error"] = b
	}
	for w, f := range got {
		b, merr := protojson.Marshal(f)
		if merr != nil {
			t.Fatal(merr)
		}
		doc[w] = b
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	buf.WriteString("{\n")
	for i, k := range keys {
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, doc[k], "  ", "  ")
		kb, _ := json.Marshal(k)
		buf.WriteString("  " + string(kb) + ": " + pretty.String())
		if i < len(keys)-1 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
	}
	buf.WriteString("}\n")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readRBACGolden(t *testing.T, path string) (map[string]*rbacfilterv3.RBAC, string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]*rbacfilterv3.RBAC{}
	var wantErr string
	for k, v := range doc {
		if k == "error" {
			_ = json.Unmarshal(v, &wantErr)
			continue
		}
		f := &rbacfilterv3.RBAC{}
		if err := protojson.Unmarshal(v, f); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if err := f.ValidateAll(); err != nil {
			t.Fatalf("golden %s is not a valid RBAC config: %v", k, err)
		}
		out[k] = f
	}
	return out, wantErr
}
