package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/meshward/meshward/control-plane/certs"
	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/control-plane/xds"
)

// securityFlags are serve's flags of who may talk to the control plane and
// how it talks to Redis: the collector's and xDS's client identities, the
// admin API's credentials, TLS everywhere, Redis' ACL user and TLS.
type securityFlags struct {
	collectorIdentity, collectorCert, collectorKey, collectorCA, collectorTokens, workloads string
	adminToken, adminCert, adminKey                                                         string
	xdsIdentity, xdsCert, xdsKey, xdsCA                                                     string
	redisUser, redisPasswordFile, redisCA, redisCert, redisKey                              string
	redisTLS                                                                                bool
}

func (f *securityFlags) register(fs *flag.FlagSet, cfg *server.Config) {
	fs.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "the mesh's SPIFFE trust domain: service-account users map to spiffe://<trust domain>/ns/NS/sa/SA")
	fs.StringVar(&f.collectorIdentity, "collector-identity", string(cfg.Collector.Identity), "how the collector knows a batch's sender: tls (its client certificate, -collector-client-ca), xfcc (x-forwarded-client-cert set by the control plane's own Istio sidecar, STRICT mTLS), or token (-collector-token-file; local development only)")
	fs.StringVar(&f.collectorCert, "collector-cert", "", "the collector's TLS certificate (PEM; read again when it changes)")
	fs.StringVar(&f.collectorKey, "collector-key", "", "the collector's TLS key (PEM)")
	fs.StringVar(&f.collectorCA, "collector-client-ca", "", "CA bundle (PEM) of the sidecars' client certificates: the collector requires one, and takes the sender's identity from its SPIFFE URI SAN")
	fs.StringVar(&f.collectorTokens, "collector-token-file", "", "-collector-identity=token: a file of \"<token> <SPIFFE ID>\" lines (tokens ≥ 32 bytes), each token standing for one sidecar identity; never put a token in a plugin configuration")
	fs.StringVar(&f.workloads, "workload-identities", "", "a file of \"<workload> <SPIFFE ID>\" lines for workloads whose service account is not named like them (default rule: <name>.<ns> belongs to spiffe://<trust domain>/ns/<ns>/sa/<name>)")
	fs.Int64Var(&cfg.Collector.MaxBatchBytes, "collector-max-batch-bytes", cfg.Collector.MaxBatchBytes, "largest batch body the collector reads")
	fs.IntVar(&cfg.Collector.MaxRecords, "collector-max-records", cfg.Collector.MaxRecords, "most records in one batch")
	fs.IntVar(&cfg.Collector.MaxInFlight, "collector-max-in-flight", cfg.Collector.MaxInFlight, "batches read or stored at once; beyond, 503 before reading (memory ≈ this × -collector-max-batch-bytes × 4)")
	fs.DurationVar(&cfg.Collector.ReadTimeout, "collector-read-timeout", cfg.Collector.ReadTimeout, "longest time to read an admitted batch's body")
	fs.DurationVar(&cfg.Collector.MaxSkew, "collector-max-skew", cfg.Collector.MaxSkew, "records timestamped further than this from the collector's clock, either way, are refused")
	fs.StringVar(&f.adminToken, "admin-token-file", "", "a file holding the admin API's bearer token (≥ 32 bytes), which may do everything; in a cluster TokenReview and SubjectAccessReview authenticate other callers")
	fs.StringVar(&f.adminCert, "admin-cert", "", "serve the admin endpoint over TLS with this certificate (PEM)")
	fs.StringVar(&f.adminKey, "admin-key", "", "the admin endpoint's TLS key (PEM)")
	fs.StringVar(&f.xdsIdentity, "xds-identity", string(xds.IdentityTLS), "how ADS knows a client: tls (its client certificate, -xds-client-ca; the node must be its workload), xfcc (behind the control plane's own Istio sidecar), or none (loopback development only)")
	fs.StringVar(&f.xdsCert, "xds-cert", "", "ADS's TLS certificate (PEM)")
	fs.StringVar(&f.xdsKey, "xds-key", "", "ADS's TLS key (PEM)")
	fs.StringVar(&f.xdsCA, "xds-client-ca", "", "CA bundle (PEM) of the Envoys' client certificates: ADS requires one, and serves a node only its own workload's configuration")
	fs.StringVar(&f.redisUser, "redis-username", "", "Redis ACL user")
	fs.StringVar(&f.redisPasswordFile, "redis-password-file", "", "a file holding the Redis user's password")
	fs.BoolVar(&f.redisTLS, "redis-tls", false, "connect to Redis over TLS")
	fs.StringVar(&f.redisCA, "redis-ca-file", "", "-redis-tls: CA bundle (PEM) of Redis' certificate (default: the system's roots)")
	fs.StringVar(&f.redisCert, "redis-cert-file", "", "-redis-tls: client certificate (PEM), for a Redis that verifies clients (tls-auth-clients)")
	fs.StringVar(&f.redisKey, "redis-key-file", "", "-redis-tls: the client certificate's key (PEM)")
}

// apply reads the files the flags name into the configuration; every
// problem is reported.
func (f *securityFlags) apply(cfg *server.Config) error {
	var errs []error
	cfg.Collector.Identity = collector.Mode(f.collectorIdentity)
	if f.collectorCert != "" || f.collectorKey != "" || f.collectorCA != "" {
		tc, err := certs.Server(certs.Files{Cert: f.collectorCert, Key: f.collectorKey, CA: f.collectorCA,
			CertFlag: "-collector-cert", KeyFlag: "-collector-key", CAFlag: "-collector-client-ca"})
		errs = append(errs, err)
		cfg.CollectorTLS = tc
	}
	if f.collectorTokens != "" {
		b, err := os.ReadFile(f.collectorTokens)
		if err == nil {
			cfg.Collector.Tokens, err = collector.ReadTokens(b)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("-collector-token-file: %w", err))
		}
	}
	if f.workloads != "" {
		w, err := identity.ReadWorkloads(f.workloads)
		if err != nil {
			errs = append(errs, fmt.Errorf("-workload-identities: %w", err))
		}
		cfg.Collector.Binding.Workloads, cfg.XDS.Binding.Workloads = w, w
	}
	if f.adminToken != "" {
		b, err := os.ReadFile(f.adminToken)
		if err != nil {
			errs = append(errs, fmt.Errorf("-admin-token-file: %w", err))
		}
		cfg.Auth.Token = []byte(strings.TrimSpace(string(b)))
	}
	if f.adminCert != "" || f.adminKey != "" {
		tc, err := certs.Server(certs.Files{Cert: f.adminCert, Key: f.adminKey, CertFlag: "-admin-cert", KeyFlag: "-admin-key"})
		errs = append(errs, err)
		cfg.AdminTLS = tc
	}
	cfg.XDS.Identity = xds.Identity(f.xdsIdentity)
	if f.xdsCert != "" || f.xdsKey != "" || f.xdsCA != "" {
		tc, err := certs.Server(certs.Files{Cert: f.xdsCert, Key: f.xdsKey, CA: f.xdsCA,
			CertFlag: "-xds-cert", KeyFlag: "-xds-key", CAFlag: "-xds-client-ca"})
		errs = append(errs, err)
		cfg.XDS.TLS = tc
	}
	cfg.RedisAuth.Username = f.redisUser
	if f.redisPasswordFile != "" {
		b, err := os.ReadFile(f.redisPasswordFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("-redis-password-file: %w", err))
		}
		cfg.RedisAuth.Password = strings.TrimSpace(string(b))
		if cfg.RedisAuth.Password == "" && err == nil {
			errs = append(errs, fmt.Errorf("-redis-password-file: %s is empty", f.redisPasswordFile))
		}
	}
	if !f.redisTLS && (f.redisCA != "" || f.redisCert != "" || f.redisKey != "") {
		errs = append(errs, errors.New("-redis-ca-file, -redis-cert-file and -redis-key-file need -redis-tls"))
	}
	if f.redisTLS {
		tc, err := certs.Client(certs.Files{Cert: f.redisCert, Key: f.redisKey, CA: f.redisCA,
			CertFlag: "-redis-cert-file", KeyFlag: "-redis-key-file", CAFlag: "-redis-ca-file"})
		errs = append(errs, err)
		cfg.RedisAuth.TLS = tc
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return nil
}
