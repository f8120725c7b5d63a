// Package devca is a throwaway certificate authority held in memory: it
// issues server certificates for loopback and client certificates carrying
// a SPIFFE ID, as a mesh's CA does for its sidecars. Tests use it to run the
// control plane's mTLS endpoints for real, and `meshward run` to give each
// emulated sidecar its own identity on the loopback collector and xDS
// server. It is never a production CA: keys live in memory only and the
// certificates expire within a day.
package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Lifetime is how long the certificates of a CA are valid.
const Lifetime = 24 * time.Hour

// CA is a certificate authority with its key in memory.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, PEM-encoded (what clients and servers
	// trust).
	PEM []byte
}

// New creates a CA named name.
func New(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(Lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Pool is a certificate pool holding the CA.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// Leaf is an issued certificate and its key.
type Leaf struct {
	// Cert is ready for a tls.Config.
	Cert tls.Certificate
	// CertPEM and KeyPEM are the same, PEM-encoded (for files).
	CertPEM, KeyPEM []byte
}

// Server issues a server certificate for the host names and IP addresses
// given (127.0.0.1 and ::1 are always included); a SPIFFE ID, when given,
// is its URI SAN (a mesh server's identity).
func (c *CA) Server(spiffeID string, hosts ...string) (*Leaf, error) {
	tmpl := &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	return c.issue(tmpl, spiffeID)
}

// Client issues a client certificate whose only URI SAN is spiffeID, as a
// mesh CA issues a workload's certificate.
func (c *CA) Client(spiffeID string) (*Leaf, error) {
	if spiffeID == "" {
		return nil, errors.New("devca: a client certificate needs an identity")
	}
	return c.issue(&x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, spiffeID)
}

func (c *CA) issue(tmpl *x509.Certificate, spiffeID string) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(Lifetime)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if spiffeID != "" {
		u, err := url.Parse(spiffeID)
		if err != nil {
			return nil, fmt.Errorf("devca: %q: %w", spiffeID, err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	l := &Leaf{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})}
	l.Cert, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	return l, err
}

// WriteFiles writes the leaf as dir/name.crt and dir/name.key (0600) and
// returns their paths: what flags such as -collector-cert take.
func (l *Leaf) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, l.CertPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, l.KeyPEM, 0o600)
}

// WriteFile writes the CA certificate as dir/name.crt and returns its path.
func (c *CA) WriteFile(dir, name string) (string, error) {
	p := filepath.Join(dir, name+".crt")
	return p, os.WriteFile(p, c.PEM, 0o600)
}

// ClientTLS is a client configuration presenting leaf (nil: none) and
// trusting the CA.
func (c *CA) ClientTLS(leaf *Leaf) *tls.Config {
	cfg := &tls.Config{RootCAs: c.Pool(), MinVersion: tls.VersionTLS12}
	if leaf != nil {
		cfg.Certificates = []tls.Certificate{leaf.Cert}
	}
	return cfg
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}
