package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// inCI reports whether the tests run in CI, where a missing tool is a
// failure rather than a reason to skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// requireTools skips the test (fails it in CI) unless every tool the suite
// runs is installed and the test runs as root.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, bin := range []string{"go", "postfix", "postconf", "saslpasswd2", "swaks", "python3", "redis-server"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	for _, mod := range []string{"libplain.so*", "libsasldb.so*"} {
		found := false
		for _, dir := range []string{"/usr/lib/*/sasl2", "/usr/lib/sasl2", "/usr/lib64/sasl2"} {
			if m, _ := filepath.Glob(filepath.Join(dir, mod)); len(m) > 0 {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, "Cyrus SASL module "+strings.TrimSuffix(mod, ".so*")+" (libsasl2-modules)")
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (postfix start needs it)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "e2e: missing " + strings.Join(missing, ", ") + "; install postfix sasl2-bin libsasl2-modules swaks redis-server python3 and run as root"
	if inCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// buildRelay builds cmd/answer-relay into dir once and returns the binary.
func buildRelay(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "answer-relay")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/answer-relay")
	cmd.Dir = ".." // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/answer-relay: %v\n%s", err, out)
	}
	return bin
}

// writeCert writes a self-signed certificate for 127.0.0.1 and the test
// host names, and its key, as PEM files; both the relay's submission
// listener and Postfix's smtpd use it, and the clients trust it as a CA.
func writeCert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "mx.account.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"mx.account.test", "relay.e2e.test", "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(name, data, mode); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a loopback port nobody listens on at the moment.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// worldDir makes a temporary directory that Postfix's unprivileged
// processes can traverse (t.TempDir's are 0700 and owned by root), and
// removes it when the test ends.
func worldDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// run runs a command and fails the test with its output if it fails.
func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// eventually polls cond every 100 ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
