// Package certs builds the control plane's TLS configurations from PEM
// files (what -collector-cert, -xds-client-ca, -redis-ca-file ... name),
// reading them again when they change on disk, so certificates rotated by
// cert-manager, Istio or a mounted Secret are picked up without a restart.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// ErrFiles marks a problem with the files given.
var ErrFiles = errors.New("TLS files")

// Files names a certificate and its key, and the CA bundle that verifies
// the other side. Flag names are for error messages.
type Files struct {
	Cert, Key, CA             string
	CertFlag, KeyFlag, CAFlag string
}

// reloader keeps a key pair and a CA pool, read again when a file's
// modification time changes.
type reloader struct {
	f     Files
	mu    sync.Mutex
	mtime [3]time.Time
	cert  *tls.Certificate
	pool  *x509.CertPool
}

func (r *reloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var mt [3]time.Time
	for i, p := range []string{r.f.Cert, r.f.Key, r.f.CA} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrFiles, err)
		}
		mt[i] = fi.ModTime()
	}
	if mt == r.mtime && (r.cert != nil || r.f.Cert == "") && (r.pool != nil || r.f.CA == "") {
		return nil
	}
	if r.f.Cert != "" {
		c, err := tls.LoadX509KeyPair(r.f.Cert, r.f.Key)
		if err != nil {
			return fmt.Errorf("%w: %s/%s: %v", ErrFiles, r.f.CertFlag, r.f.KeyFlag, err)
		}
		r.cert = &c
	}
	if r.f.CA != "" {
		b, err := os.ReadFile(r.f.CA)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrFiles, r.f.CAFlag, err)
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(b) {
			return fmt.Errorf("%w: %s: %s holds no PEM certificate", ErrFiles, r.f.CAFlag, r.f.CA)
		}
		r.pool = p
	}
	r.mtime = mt
	return nil
}

func (r *reloader) current() (*tls.Certificate, *x509.CertPool, error) {
	err := r.load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert == nil && r.f.Cert != "" || r.pool == nil && r.f.CA != "" {
		return nil, nil, err
	}
	// A file being rewritten may fail to load for a moment: the last good
	// pair stays in use.
	return r.cert, r.pool, nil
}

// Server returns a server configuration presenting f.Cert/f.Key; with
// f.CA, clients must present a certificate that CA issued (mTLS).
func Server(f Files) (*tls.Config, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("%w: %s and %s go together", ErrFiles, f.CertFlag, f.KeyFlag)
	}
	if f.Cert == "" {
		return nil, fmt.Errorf("%w: %s and %s are required", ErrFiles, f.CertFlag, f.KeyFlag)
	}
	r := &reloader{f: f}
	if err := r.load(); err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		base.ClientAuth = tls.RequireAndVerifyClientCert
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool, err := r.current()
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{*cert}
		c.ClientCAs = pool
		return c, nil
	}
	// The configuration as first read, for callers that look at it
	// (ClientAuth, a first certificate); handshakes use the current one.
	cert, pool, _ := r.current()
	base.Certificates, base.ClientCAs = []tls.Certificate{*cert}, pool
	return base, nil
}

// Client returns a client configuration trusting f.CA (empty: the system's
// roots) and presenting f.Cert/f.Key when given.
func Client(f Files) (*tls.Config, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("%w: %s and %s go together", ErrFiles, f.CertFlag, f.KeyFlag)
	}
	r := &reloader{f: f}
	if err := r.load(); err != nil {
		return nil, err
	}
	_, pool, _ := r.current()
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if f.Cert != "" {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _, err := r.current()
			return cert, err
		}
	}
	return c, nil
}
