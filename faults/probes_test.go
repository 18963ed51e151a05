//go:build linux

package faults

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/answer-relay/answer-relay/internal/redistest"
)

// probe is one open-relay attempt: SMTP commands sent as written, with the
// message data sent after a 354.
type probe struct {
	name     string
	listener string // "submission" or "bounce"
	cmds     []string
	// pipelined sends every command and the data in one write without
	// waiting for replies (RFC 2920), as spam tools do.
	pipelined bool
}

// probeResult is the replies to a probe's commands.
type probeResult struct {
	codes []int
	// accepted: a recipient taken for a domain the listener does not
	// serve, or a message taken for relaying.
	accepted bool
}

const probeData = "From: <ceo@helpdesk.test>\r\nTo: <victim@outside.test>\r\nSubject: probe\r\n\r\nbuy now\r\n.\r\n"

// runProbe plays p against addr. A reply of 2xx to RCPT TO on the bounce
// listener for a recipient outside its domain, or 2xx after the data on
// either listener, is an acceptance.
func runProbe(t *testing.T, addr string, p probe) probeResult {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s: dial: %v", p.name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	tc := textproto.NewConn(conn)
	var res probeResult
	read := func() int {
		code, _, err := tc.ReadResponse(0)
		if err != nil && code == 0 {
			return 0 // connection closed
		}
		res.codes = append(res.codes, code)
		return code
	}
	if read() != 220 {
		t.Fatalf("%s: no greeting", p.name)
	}
	if p.pipelined {
		w := bufio.NewWriter(conn)
		for _, c := range p.cmds {
			fmt.Fprintf(w, "%s\r\n", c)
		}
		fmt.Fprint(w, probeData)
		fmt.Fprint(w, "QUIT\r\n")
		_ = w.Flush()
		for range len(p.cmds) + 2 {
			code := read()
			if code == 0 {
				break
			}
			if code == 250 && len(res.codes) > 1 && res.codes[len(res.codes)-2] == 354 {
				res.accepted = true
			}
		}
		return res
	}
	for _, c := range p.cmds {
		if err := tc.PrintfLine("%s", c); err != nil {
			return res
		}
		code := read()
		verb := strings.ToUpper(strings.SplitN(c, " ", 2)[0])
		switch {
		case code == 0:
			return res
		case verb == "RCPT" && code/100 == 2 && p.listener == "bounce" && !strings.Contains(strings.ToLower(c), "@bounces.test>"):
			res.accepted = true
		case verb == "DATA" && code == 354:
			if _, err := conn.Write([]byte(probeData)); err != nil {
				return res
			}
			if read()/100 == 2 {
				res.accepted = true
			}
		}
	}
	return res
}

// TestOpenRelayProbes is case 7: a relay that requires AUTH (no client
// network allowed) and its bounce listener get the usual open-relay
// probes. None is accepted, nothing reaches the upstream and nothing is
// queued.
func TestOpenRelayProbes(t *testing.T) {
	rs := redistest.Start(t)
	sk := startSink(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	rp := startRelay(t, relayOpts{Upstream: sk.Addr, RedisURL: rs.URL(), Bounce: true, Users: []string{"helpdesk:" + string(hash)}})

	ehlo := "EHLO spammer.example"
	sub := func(name string, cmds ...string) probe {
		return probe{name: name, listener: "submission", cmds: append([]string{ehlo}, cmds...)}
	}
	bnc := func(name string, cmds ...string) probe {
		return probe{name: name, listener: "bounce", cmds: append([]string{ehlo}, cmds...)}
	}
	probes := []probe{
		sub("unauthenticated", "MAIL FROM:<spam@outside.test>", "RCPT TO:<victim@outside.test>", "DATA"),
		sub("spoofed local sender", "MAIL FROM:<agent@helpdesk.test>", "RCPT TO:<victim@outside.test>", "DATA"),
		sub("null sender", "MAIL FROM:<>", "RCPT TO:<victim@outside.test>", "DATA"),
		sub("percent hack", "MAIL FROM:<spam@outside.test>", "RCPT TO:<victim%outside.test@relay-1.relay.test>", "DATA"),
		sub("source route", "MAIL FROM:<spam@outside.test>", "RCPT TO:<@relay-1.relay.test:victim@outside.test>", "DATA"),
		sub("quoted local part", "MAIL FROM:<spam@outside.test>", `RCPT TO:<"victim@outside.test"@relay-1.relay.test>`, "DATA"),
		sub("bang path", "MAIL FROM:<spam@outside.test>", "RCPT TO:<outside.test!victim@relay-1.relay.test>", "DATA"),
		sub("AUTH in clear text", "AUTH PLAIN AGhlbHBkZXNrAGNvcnJlY3QgaG9yc2U=", "MAIL FROM:<spam@outside.test>", "RCPT TO:<victim@outside.test>", "DATA"),
		sub("DATA without MAIL", "DATA"),
		sub("RCPT without MAIL", "RCPT TO:<victim@outside.test>", "DATA"),
		{name: "pipelined", listener: "submission", pipelined: true,
			cmds: []string{ehlo, "MAIL FROM:<spam@outside.test>", "RCPT TO:<victim@outside.test>", "DATA"}},
		bnc("bounce: outside recipient", "MAIL FROM:<spam@outside.test>", "RCPT TO:<victim@outside.test>", "DATA"),
		bnc("bounce: percent hack", "MAIL FROM:<spam@outside.test>", "RCPT TO:<victim%outside.test@bounces.test>", "DATA"),
		bnc("bounce: postmaster percent hack", "MAIL FROM:<spam@outside.test>", "RCPT TO:<postmaster%outside.test@bounces.test>", "DATA"),
		bnc("bounce: source route", "MAIL FROM:<spam@outside.test>", "RCPT TO:<@bounces.test:victim@outside.test>", "DATA"),
		bnc("bounce: quoted local part", "MAIL FROM:<spam@outside.test>", `RCPT TO:<"victim@outside.test"@bounces.test>`, "DATA"),
		bnc("bounce: VERP address in another domain", "MAIL FROM:<>", "RCPT TO:<bounce+01ARZ3NDEKTSV4RRFFQ69G5FAV@outside.test>", "DATA"),
		bnc("bounce: subdomain", "MAIL FROM:<>", "RCPT TO:<postmaster@evil.bounces.test>", "DATA"),
		{name: "bounce: pipelined", listener: "bounce", pipelined: true,
			cmds: []string{ehlo, "MAIL FROM:<spam@outside.test>", "RCPT TO:<victim@outside.test>", "DATA"}},
	}
	acceptedN := 0
	for _, p := range probes {
		addr := rp.SMTP
		if p.listener == "bounce" {
			addr = rp.Bounce
		}
		res := runProbe(t, addr, p)
		if res.accepted {
			acceptedN++
			t.Errorf("probe %q accepted: replies %v", p.name, res.codes)
		} else {
			t.Logf("probe %-40q refused: replies %v", p.name, res.codes)
		}
	}
	time.Sleep(time.Second) // a relayed probe would reach the sink now
	if n := sk.count(); n != 0 {
		t.Errorf("%d messages reached the upstream", n)
	}
	var page struct {
		Answers []struct{ ID string } `json:"answers"`
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+rp.API+"/api/v1/outbox", nil)
	req.Header.Set("Authorization", "Bearer "+ownerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := decodeJSON(resp, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Answers) != 0 {
		t.Errorf("%d answers queued by probes", len(page.Answers))
	}
	figures(t, "probes", len(probes), "accepted", acceptedN, "reached_upstream", sk.count(), "queued", len(page.Answers))
}
