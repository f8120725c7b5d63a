package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/internal/redistest"
)

// TestServeRefusesWithoutCredentials: serve stops before serving, naming
// the flags to give, when nothing says who the collector's senders are,
// when the admin API has no credentials, and when Redis (an ACL user with
// a password, TLS only) refuses what it is given.
func TestServeRefusesWithoutCredentials(t *testing.T) {
	dir := t.TempDir()
	adminToken := filepath.Join(dir, "admin-token")
	password := filepath.Join(dir, "redis-password")
	wrong := filepath.Join(dir, "wrong-password")
	for f, v := range map[string]string{adminToken: strings.Repeat("a", 40), password: "the-redis-password-0123", wrong: "not-the-password"} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsFiles := redistest.NewTLS(t)
	rds := redistest.StartWith(t, redistest.Options{Password: "the-redis-password-0123", TLS: tlsFiles})
	listen := []string{"-collector-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}
	// No API server: serve elects in Redis (an unset $KUBECONFIG; one naming
	// no file is an error of its own).
	t.Setenv("KUBECONFIG", "")
	tlsFlags := []string{"-redis-tls", "-redis-ca-file", tlsFiles.CAFile, "-redis-cert-file", tlsFiles.ClientCertFile, "-redis-key-file", tlsFiles.ClientKeyFile}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"the collector's default (mTLS) without certificates", []string{"-admin-token-file", adminToken}, "-collector-identity=tls needs -collector-cert"},
		{"no admin credentials", []string{"-collector-identity", "xfcc"}, "-admin-token-file"},
		{"a short collector token file", []string{"-collector-identity", "token", "-collector-token-file", adminToken, "-admin-token-file", adminToken}, "-collector-token-file"},
		{"Redis without its password", append([]string{"-collector-identity", "xfcc", "-admin-token-file", adminToken, "-redis", rds.Addr}, tlsFlags...), "redis refused the credentials"},
		{"Redis with a wrong password", append([]string{"-collector-identity", "xfcc", "-admin-token-file", adminToken, "-redis", rds.Addr,
			"-redis-username", "meshward", "-redis-password-file", wrong}, tlsFlags...), "WRONGPASS"},
		{"a Redis CA file without -redis-tls", []string{"-collector-identity", "xfcc", "-admin-token-file", adminToken, "-redis-ca-file", tlsFiles.CAFile}, "need -redis-tls"},
	} {
		err := Main(append(append([]string{"serve"}, listen...), c.args...), &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if strings.Contains(c.want, "redis refused") && !strings.Contains(err.Error(), "-redis-password-file") {
			t.Errorf("%s: the error does not name the flags: %v", c.name, err)
		}
		if errors.Is(err, errHelp) {
			t.Errorf("%s: help shown", c.name)
		}
	}
}
