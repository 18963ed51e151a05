package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// Addresses at the Postfix instance. customer.test is delivered there into
// Maildirs; slow.test is relayed to a sink that answers 451 to every
// recipient; bounces.test is the relay's bounce domain, relayed to its
// bounce listener.
const (
	goodRcpt    = "good@customer.test"
	unknownRcpt = "nobody@customer.test"
	slowRcpt    = "defer-me@slow.test" // smtptest defers defer...@ addresses
	bounceDom   = "bounces.test"

	// The relay's login at the Postfix instance (its Cyrus sasldb).
	upstreamUser     = "relay"
	upstreamPassword = "upstream-secret-0123"
)

// postfix is a private Postfix instance started with postfix -c.
type postfix struct {
	t    *testing.T
	dir  string // everything lives below it
	etc  string // the config directory
	port int    // smtpd on 127.0.0.1
}

// postfixSetup is what the templates in testdata need.
type postfixSetup struct {
	Dir      string
	Port     int
	UID, GID int
}

// newPostfix writes a complete instance below a fresh directory: main.cf
// and master.cf from testdata, the transport and virtual mailbox tables,
// the TLS certificate, and a sasldb with the relay's login. bouncePort is
// the relay's bounce listener, sinkPort the deferring sink for slow.test.
func newPostfix(t *testing.T, port, bouncePort, sinkPort int, certFile, keyFile string) *postfix {
	t.Helper()
	dir := worldDir(t, "answer-relay-e2e-postfix-")
	p := &postfix{t: t, dir: dir, etc: filepath.Join(dir, "etc"), port: port}
	// Maildirs belong to nobody, the virtual agent's delivery user.
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("e2e: user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	for _, d := range []string{p.etc, filepath.Join(p.etc, "sasl"), filepath.Join(dir, "mail"), filepath.Join(dir, "queue")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "mail"), uid, gid); err != nil {
		t.Fatal(err)
	}
	setup := postfixSetup{Dir: dir, Port: port, UID: uid, GID: gid}
	for _, name := range []string{"main.cf", "master.cf"} {
		tmpl := template.Must(template.ParseFiles(filepath.Join("testdata", name+".tmpl")))
		var b bytes.Buffer
		if err := tmpl.Execute(&b, setup); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(p.etc, name), b.Bytes(), 0o644)
	}
	writeFile(t, filepath.Join(p.etc, "transport"), fmt.Appendf(nil,
		"%s smtp:[127.0.0.1]:%d\nslow.test smtp:[127.0.0.1]:%d\n", bounceDom, bouncePort, sinkPort), 0o644)
	writeFile(t, filepath.Join(p.etc, "vmailbox"), []byte(goodRcpt+" customer.test/good/\n"), 0o644)
	for src, dst := range map[string]string{certFile: "cert.pem", keyFile: "key.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(p.etc, dst), b, 0o600)
	}

	// Cyrus SASL: smtpd reads <cyrus_sasl_config_path>/smtpd.conf and the
	// sasldb as the postfix user. The realm is myhostname, which is what
	// smtpd hands Cyrus when smtpd_sasl_local_domain is empty.
	sasl := filepath.Join(p.etc, "sasl")
	sasldb := filepath.Join(sasl, "sasldb2")
	writeFile(t, filepath.Join(sasl, "smtpd.conf"), fmt.Appendf(nil,
		"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN\n", sasldb), 0o644)
	run(t, upstreamPassword, "saslpasswd2", "-f", sasldb, "-u", "mx.account.test", "-p", "-c", upstreamUser)
	pfx, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("e2e: user postfix: %v", err)
	}
	puid, _ := strconv.Atoi(pfx.Uid)
	pgid, _ := strconv.Atoi(pfx.Gid)
	entries, _ := os.ReadDir(sasl)
	for _, e := range entries {
		if err := os.Chown(filepath.Join(sasl, e.Name()), puid, pgid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(sasl, puid, pgid); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(p.cleanup)
	return p
}

// addr is the instance's smtpd address.
func (p *postfix) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// start starts the instance and waits for its greeting.
func (p *postfix) start() {
	p.t.Helper()
	if out, err := exec.Command("postfix", "-c", p.etc, "start").CombinedOutput(); err != nil {
		p.t.Fatalf("e2e: postfix -c %s start: %v %s\n%s", p.etc, err, out, p.maillog())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := greet(p.addr()); err == nil {
			return
		} else if time.Now().After(deadline) {
			p.t.Fatalf("e2e: postfix does not greet on %s: %v\n%s", p.addr(), err, p.maillog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// greet connects and reads a 220 greeting.
func greet(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _, err = textproto.NewReader(bufio.NewReader(c)).ReadResponse(220)
	return err
}

// stop stops the instance with postfix stop and kills whatever of it is
// left, so the port is free and nothing of it runs on.
func (p *postfix) stop() {
	p.t.Helper()
	cmd := exec.Command("postfix", "-c", p.etc, "stop")
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Logf("postfix stop: %v: %s", err, out)
	}
	p.killLeftovers()
	deadline := time.Now().Add(10 * time.Second)
	for greet(p.addr()) == nil {
		if time.Now().After(deadline) {
			p.t.Fatalf("e2e: postfix still listens on %s after stop", p.addr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killLeftovers sends SIGKILL to every process of this instance: those
// whose environment names its config directory (master passes MAIL_CONFIG
// on to every daemon). The system's or another test's Postfix has another.
func (p *postfix) killLeftovers() {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	want := []byte("MAIL_CONFIG=" + p.etc + "\x00")
	for _, f := range procs {
		env, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		p.t.Logf("e2e: killing leftover postfix process %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (p *postfix) cleanup() {
	p.stop()
	if p.t.Failed() {
		p.t.Logf("postfix maillog:\n%s", p.maillog())
	}
}

// maillog returns the instance's log.
func (p *postfix) maillog() string {
	b, err := os.ReadFile(filepath.Join(p.dir, "maillog"))
	if err != nil {
		return "(no maillog: " + err.Error() + ")"
	}
	return string(b)
}

// delivered returns the messages in good@customer.test's Maildir.
func (p *postfix) delivered() []string {
	files, _ := filepath.Glob(filepath.Join(p.dir, "mail", "customer.test", "good", "new", "*"))
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

// hasLog reports whether the maillog has a line containing every part.
func (p *postfix) hasLog(parts ...string) bool {
	for line := range strings.SplitSeq(p.maillog(), "\n") {
		all := true
		for _, s := range parts {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
