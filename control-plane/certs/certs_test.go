package certs

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshward/meshward/internal/devca"
)

// serverCert handshakes with a server configuration and returns the serial
// of the certificate it presented.
func serverCert(t *testing.T, sc *tls.Config, cc *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-done
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// A server configuration presents the files' certificate, requires a
// client certificate of the CA, and picks up a certificate rewritten on
// disk without a restart.
func TestServerReloads(t *testing.T) {
	dir := t.TempDir()
	ca, _ := devca.New("test")
	first, _ := ca.Server("", "127.0.0.1")
	certFile, keyFile, err := first.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile, _ := ca.WriteFile(dir, "ca")
	sc, err := Server(Files{Cert: certFile, Key: keyFile, CA: caFile, CertFlag: "-c", KeyFlag: "-k", CAFlag: "-ca"})
	if err != nil {
		t.Fatal(err)
	}
	if sc.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatal("a client CA does not require client certificates")
	}
	client, _ := ca.Client("spiffe://cluster.local/ns/a/sa/b")
	cc := ca.ClientTLS(client)
	s1 := serverCert(t, sc, cc)
	second, _ := ca.Server("", "127.0.0.1")
	// A later modification time, as a rotation writes.
	if _, _, err := second.WriteFiles(dir, "server"); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if s2 := serverCert(t, sc, cc); s2 == s1 {
		t.Error("the rotated certificate was not picked up")
	}
}

func TestFilesRefused(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	_ = os.WriteFile(junk, []byte("not PEM"), 0o600)
	for name, f := range map[string]Files{
		"key without cert": {Key: junk, CertFlag: "-c", KeyFlag: "-k"},
		"no cert":          {},
		"missing file":     {Cert: filepath.Join(dir, "none"), Key: junk},
		"a CA without PEM": {Cert: junk, Key: junk, CA: junk},
	} {
		if _, err := Server(f); !errors.Is(err, ErrFiles) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Client(Files{CA: junk, CAFlag: "-ca"}); !errors.Is(err, ErrFiles) {
		t.Errorf("client with a junk CA: %v", err)
	}
}
