package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/control-plane/certs"
)

// adminFlags are how a command authenticates to the admin API: a token
// file (the administrator's, or any bearer token the API server accepts),
// else the kubeconfig's credentials (a bearer token, token file or exec
// plugin), and the CA of an admin endpoint served over TLS.
type adminFlags struct {
	tokenFile, kubeconfig, caFile string
}

func (f *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tokenFile, "token-file", "", "a file holding the bearer token to present (default: the kubeconfig's credentials)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "a kubeconfig whose user's bearer token (or token file, or exec plugin) to present (default $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&f.caFile, "ca-file", "", "CA bundle (PEM) of an admin endpoint served over TLS")
}

// errNoCredentials: neither a token file nor a kubeconfig with a token.
var errNoCredentials = errors.New("no credentials for the admin API: give --token-file, or a kubeconfig whose user has a bearer token")

// client returns an HTTP client that presents the credentials.
func (f *adminFlags) client() (*http.Client, error) {
	base := http.DefaultTransport.(*http.Transport).Clone()
	if f.caFile != "" {
		tc, err := certs.Client(certs.Files{CA: f.caFile, CAFlag: "--ca-file"})
		if err != nil {
			return nil, err
		}
		base.TLSClientConfig = tc
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		client.Transport = bearer{token: strings.TrimSpace(string(b)), next: base}
		return client, nil
	}
	cfg, err := (&kubeFlags{kubeconfig: f.kubeconfig}).config()
	if err != nil || cfg.BearerToken == "" && cfg.BearerTokenFile == "" && cfg.ExecProvider == nil && cfg.AuthProvider == nil {
		return nil, errors.Join(errNoCredentials, err)
	}
	// The kubeconfig's token (refreshed by its token file or exec plugin),
	// never its client certificate: the admin API is not the API server.
	wrapped, err := rest.HTTPWrappersForConfig(&rest.Config{BearerToken: cfg.BearerToken, BearerTokenFile: cfg.BearerTokenFile,
		ExecProvider: cfg.ExecProvider, AuthProvider: cfg.AuthProvider}, base)
	if err != nil {
		return nil, err
	}
	client.Transport = wrapped
	return client, nil
}

// bearer adds a bearer token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// refused turns a 401 or 403 into an error that says what to do.
func refused(resp *http.Response, what string) error {
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	return fmt.Errorf("%s: %s: %s (give --token-file, or a kubeconfig whose user may read meshward.io resources)", what, resp.Status, strings.TrimSpace(string(b)))
}
