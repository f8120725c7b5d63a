package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// secretCmd is "meshward secret": it creates a Secret holding a random
// value unless it exists, so the manifests can ship Redis with a generated
// password, and the mesh with a value key (-format hex -bytes 16), that
// never live in a file (a Job runs it at install).
func secretCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("secret", stderr)
	var kf kubeFlags
	kf.register(fs, "where to create the Secret")
	ns := fs.String("namespace", "meshward-system", "the Secret's namespace")
	name := fs.String("name", "meshward-redis", "the Secret's name")
	key := fs.String("key", "password", "the key holding the random value")
	size := fs.Int("bytes", 32, "random bytes in the value")
	format := fs.String("format", "base64url", "how the value is written: base64url, or hex (a value key: -bytes 16)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *size < 16 || *size > 1024 {
		return fmt.Errorf("%w: -bytes %d is not in [16, 1024]", ErrUsage, *size)
	}
	encode, ok := secretFormats[*format]
	if !ok {
		return fmt.Errorf("%w: -format %q is not base64url or hex", ErrUsage, *format)
	}
	cfg, err := kf.config()
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	created, err := ensureSecret(ctx, kc, *ns, *name, *key, *size, encode)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stdout, "created Secret %s/%s with a random %s\n", *ns, *name, *key)
	} else {
		fmt.Fprintf(stdout, "Secret %s/%s exists: kept\n", *ns, *name)
	}
	return nil
}

// secretFormats write a Secret's random value.
var secretFormats = map[string]func([]byte) string{"base64url": base64.RawURLEncoding.EncodeToString, "hex": hex.EncodeToString}

// ensureSecret creates the Secret with a fresh random value unless one of
// that name exists (which is kept as it is: rotating a password is a
// decision, not a side effect of a re-install).
func ensureSecret(ctx context.Context, kc kubernetes.Interface, ns, name, key string, size int, encode func([]byte) string) (bool, error) {
	if _, err := kc.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
		return false, nil
	} else if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)
	}
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		return false, err
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/part-of": "meshward"}},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{key: []byte(encode(b))}}
	if _, err := kc.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return false, nil // another run won the race: its value stands
		}
		return false, fmt.Errorf("creating Secret %s/%s: %w", ns, name, err)
	}
	return true, nil
}
