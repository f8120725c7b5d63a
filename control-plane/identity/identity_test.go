package identity

import (
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/internal/devca"
)

const users = "spiffe://cluster.local/ns/shop/sa/users"

func TestParseSPIFFE(t *testing.T) {
	if td, ns, sa, ok := ParseSPIFFE(users); !ok || td != "cluster.local" || ns != "shop" || sa != "users" {
		t.Errorf("%s: %s %s %s %v", users, td, ns, sa, ok)
	}
	for _, bad := range []string{"", "users.shop", "spiffe://cluster.local/ns/shop", "spiffe://cluster.local/ns/shop/sa/users/x",
		"spiffe://cluster.local/ns//sa/users", "spiffe://cluster.local/sa/users/ns/shop", "spiffe://cluster.local/ns/shop/sa/us ers",
		"spiffe://cluster.local/ns/shop/sa/users?x=1", "http://cluster.local/ns/shop/sa/users", "spiffe://cluster.local/ns/shop/sa/" + strings.Repeat("a", 3000)} {
		if _, _, _, ok := ParseSPIFFE(bad); ok {
			t.Errorf("%q parsed as a SPIFFE ID", bad)
		}
	}
}

func TestFromServiceAccountUser(t *testing.T) {
	if id, ok := FromServiceAccountUser("system:serviceaccount:shop:users", "cluster.local"); !ok || id != users {
		t.Errorf("service account user: %q %v", id, ok)
	}
	for _, u := range []string{"admin", "system:serviceaccount:shop", "system:serviceaccount:shop:users:x", "system:serviceaccounts:shop", "system:serviceaccount::users"} {
		if id, ok := FromServiceAccountUser(u, "cluster.local"); ok {
			t.Errorf("%q mapped to %q", u, id)
		}
	}
}

func TestFromCert(t *testing.T) {
	ca, err := devca.New("test")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Client(users)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(leaf.Cert.Certificate[0])
	if id, err := FromCert(cert); err != nil || id != users {
		t.Errorf("FromCert: %q %v", id, err)
	}
	two := *cert
	two.URIs = append([]*url.URL{}, cert.URIs[0], cert.URIs[0])
	if _, err := FromCert(&two); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("two URI SANs: %v", err)
	}
	other := *cert
	u, _ := url.Parse("spiffe://cluster.local/workload/users")
	other.URIs = []*url.URL{u}
	if _, err := FromCert(&other); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("a SPIFFE ID of another shape: %v", err)
	}
	if _, err := FromCert(nil); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("no certificate: %v", err)
	}
}

func TestFromXFCC(t *testing.T) {
	// What Envoy's SANITIZE_SET with subject, URI and DNS writes (the
	// subject is quoted: it holds commas).
	set := `By=spiffe://cluster.local/ns/meshward-system/sa/meshward;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="CN=users,O=shop";URI=` + users + `;DNS=users.shop.svc`
	if id, err := FromXFCC(set); err != nil || id != users {
		t.Errorf("sanitized header: %q %v", id, err)
	}
	forged := `By=x;URI=spiffe://cluster.local/ns/shop/sa/frontend,` + set
	if _, err := FromXFCC(forged); !errors.Is(err, ErrForgedXFCC) {
		t.Errorf("a client's element before the sidecar's: %v", err)
	}
	// A comma inside quotes does not split elements.
	if id, err := FromXFCC(`Subject="a,b;c=d";URI=` + users); err != nil || id != users {
		t.Errorf("quoted separators: %q %v", id, err)
	}
	for name, h := range map[string]string{
		"empty":           "",
		"no URI":          `By=x;Hash=y`,
		"two URIs":        `URI=` + users + `;URI=spiffe://cluster.local/ns/shop/sa/cart`,
		"not SPIFFE":      `URI=https://evil.example/ns/shop/sa/users`,
		"unterminated":    `Subject="abc;URI=` + users,
		"huge":            strings.Repeat("x", 20<<10),
		"trailing commas": `URI=` + users + `,`,
	} {
		if id, err := FromXFCC(h); err == nil {
			t.Errorf("%s: accepted as %q", name, id)
		}
	}
}

func TestBinding(t *testing.T) {
	b := Binding{TrustDomain: "cluster.local", Workloads: map[string]string{
		"reviews-v2.bookinfo": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
		"legacy":              "spiffe://cluster.local/ns/old/sa/legacy",
	}}
	for _, c := range []struct {
		id, workload string
		want         bool
	}{
		{users, "users.shop", true},
		{users, "cart.shop", false},                                 // another workload
		{users, "users.other", false},                               // another namespace
		{"spiffe://evil.org/ns/shop/sa/users", "users.shop", false}, // another trust domain
		{"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews", "reviews-v2.bookinfo", true},
		{"spiffe://cluster.local/ns/bookinfo/sa/reviews-v2", "reviews-v2.bookinfo", false}, // listed: only its identity
		{"spiffe://cluster.local/ns/old/sa/legacy", "legacy", true},
		{users, "users", false},        // no namespace, not listed
		{users, "users.shop.x", false}, // not name.namespace
		{"users.shop", "users.shop", false},
	} {
		if got := b.Allows(c.id, c.workload); got != c.want {
			t.Errorf("Allows(%s, %s) = %v", c.id, c.workload, got)
		}
	}
	if err := (Binding{Workloads: map[string]string{"a.b": "nope"}}).Validate(); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("a bad listed identity: %v", err)
	}
}

func TestReadWorkloads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "workloads")
	content := "# workload identity\n\nreviews-v2.bookinfo spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews\nbad-line\nx.y http://nope\nreviews-v2.bookinfo spiffe://cluster.local/ns/bookinfo/sa/other\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := ReadWorkloads(p)
	if err == nil || !strings.Contains(err.Error(), ":4:") || !strings.Contains(err.Error(), ":5:") || !strings.Contains(err.Error(), ":6:") {
		t.Errorf("want errors for lines 4, 5 and 6: %v", err)
	}
	if m["reviews-v2.bookinfo"] != "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews" || len(m) != 1 {
		t.Errorf("workloads %v", m)
	}
}
