package dsn

import (
	"bytes"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"
)

// separators are phrases of the line with which non-MIME bounces introduce
// the returned message (lower case).
var separators = []string{
	"copy of the message", "copy of your message", "copy of the original message",
	"original message follows", "original message headers", "header of the original message",
	"headers of the original message", "header of original message", "----- original message",
	"--- original message", "original message ---", "undelivered message follows",
	"unsent message below", "returned message follows", "message headers follow",
	"content-type: message/rfc822", "original message header", "returned mail follows",
	"the original message was:", "text of the returned message", "headers of your message",
	"your message reads", "message text follows", "the message header follows",
	"original mail as follows",
}

// splitReturned splits the text of a bounce at the line that introduces the
// returned message; errText is a prefix of body. temporary tells whether
// the error text says the failure is temporary.
func splitReturned(body string) (errText, returned string, temporary bool) {
	// The first separator in the text; the line holding it ends the
	// error text unless a header block comes first. The error text is
	// mostly at the start: lower-case and search a growing prefix.
	cut := len(body)
	lp := lowerPool.Get().(*[]byte)
	low := (*lp)[:0]
	defer func() {
		// Whether the error text says the failure is temporary, while
		// its lower-case copy is at hand.
		temporary = isTemporary(low[:min(len(errText), len(low))])
		if cap(low) <= maxPooledBuffer {
			*lp = low[:0]
			lowerPool.Put(lp)
		}
	}()
	for n := 4 << 10; ; n *= 4 {
		n = min(n, len(body))
		from := len(low)
		low = append(low, body[from:n]...)
		for i := from; i < n; i++ {
			if c := low[i]; c >= 'A' && c <= 'Z' {
				low[i] = c + 'a' - 'A'
			}
		}
		if k := separatorSet.find(low[:n]); k >= 0 {
			cut = k
		}
		if n == len(body) || cut < n-maxSeparatorLen {
			break
		}
	}
	seen := false
	for off := 0; off < len(body); {
		end := len(body)
		if k := strings.IndexByte(body[off:], '\n'); k >= 0 {
			end = off + k
		}
		l := body[off:end]
		if cut < len(body) && cut <= end {
			return body[:off], body[min(end+1, len(body)):], false
		}
		// A header block after some text: Return-Path or Received followed
		// by more header fields.
		if seen && end < len(body) && (strings.HasPrefix(l, "Return-Path:") || strings.HasPrefix(l, "Received: ") ||
			strings.HasPrefix(l, "Return-path:")) && looksHeader(firstLine(body[end+1:])) {
			return body[:off], body[off:], false
		}
		if !seen && strings.TrimSpace(l) != "" {
			seen = true
		}
		off = end + 1
	}
	return body, "", false
}

// phraseSet is a set of lower-case phrases looked up by their first byte.
type phraseSet [256][][]byte

// newPhraseSet makes the set of phrases ps.
func newPhraseSet(ps []string) *phraseSet {
	var t phraseSet
	for _, p := range ps {
		if p != "" {
			t[p[0]] = append(t[p[0]], []byte(p))
		}
	}
	return &t
}

// find returns where the first phrase of the set in the lower-case text
// low starts, or -1: one pass, trying at each byte the phrases that begin
// with it.
func (t *phraseSet) find(low []byte) int {
	for i, c := range low {
		for _, p := range t[c] {
			if bytes.HasPrefix(low[i:], p) {
				return i
			}
		}
	}
	return -1
}

var (
	separatorSet = newPhraseSet(separators)
	temporarySet = newPhraseSet(temporaryPhrases)
)

// lowerPool keeps the buffers splitReturned lower-cases text into.
var lowerPool = sync.Pool{New: func() any { return new([]byte) }}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	if k := strings.IndexByte(s, '\n'); k >= 0 {
		return s[:k]
	}
	return s
}

// maxSeparatorLen is the length of the longest separator.
var maxSeparatorLen = func() int {
	n := 0
	for _, s := range separators {
		n = max(n, len(s))
	}
	return n
}()

// looksHeader reports whether l looks like a header field or a folded
// continuation of one.
func looksHeader(l string) bool {
	if l == "" {
		return false
	}
	if l[0] == ' ' || l[0] == '\t' {
		return true
	}
	name, _, ok := strings.Cut(l, ":")
	return ok && name != "" && !strings.ContainsAny(name, " \t<>@")
}

// leadIns are the words that may stand before a recipient address at the
// start of a line of a bounce (lower case, without trailing colon).
var leadIns = map[string]bool{
	"": true, "to": true, "rcpt to": true, "recipient": true, "recipients": true, "failed recipient": true,
	"original-recipient": true, "final-recipient": true, "addressed to": true, "unknown user": true,
	"recipient address": true, "address": true, "-": true, "*": true, "user": true, "for": true,
	"invalid recipient": true, "failed address": true, "bad address": true, "mailbox": true,
	"original recipient": true, "recipient(s)": true, "destinataire": true, "empfänger": true,
	"rfc822": true, "x-failed-recipients": true, "unknown recipient": true, "rcpt": true,
	"recipient name": true, "e-mail address": true, "email address": true, "the address": true,
	"delivery to": true, "could not deliver to": true, "your message to": true, "message to": true,
	"failed to deliver to": true, "unable to deliver to": true, "not delivered to": true,
	"delivery failed for": true, "undeliverable to": true, "delivery to the following recipient failed": true,
	"user unknown": true, "sent to": true, "mail to": true, "delivering to": true, "deliver to": true,
}

// bounceSenders are local parts of the addresses bounces come from.
var bounceSenders = []string{"mailer-daemon", "postmaster", "post_master", "mail-daemon", "mailerdaemon", "maildelivery",
	"mail.delivery", "mdaemon", "bounce", "nobody", "root", "noreply", "no-reply", "daemon", "mailer"}

// bounceSubjects are phrases of bounce subjects (lower case).
var bounceSubjects = []string{"undeliver", "undelivered", "delivery", "failure", "failed", "returned",
	"not delivered", "non remis", "unzustellbar", "rejected", "bounce", "error", "warning", "problem",
	"could not", "unable", "nondeliverable", "non-deliverable", "fehlgeschlagen", "notification",
	"mail system", "delayed", "permanent", "unknown"}

// isBounceLike reports whether a message without a delivery-status part
// looks like a bounce at all: it comes from a mailer daemon, to the null
// sender, or says so in its subject.
func isBounceLike(h textproto.Header) bool {
	from := strings.ToLower(h.Get("From"))
	for _, s := range bounceSenders {
		if strings.Contains(from, s) {
			return true
		}
	}
	if h.Get("X-Failed-Recipients") != "" {
		return true
	}
	rp := strings.TrimSpace(h.Get("Return-Path"))
	if rp == "<>" {
		return true
	}
	subj := strings.ToLower(decodeWords(h.Get("Subject")))
	for _, s := range bounceSubjects {
		if strings.Contains(subj, s) {
			return true
		}
	}
	return false
}

// scanText finds the recipients of a bounce in its human-readable text: the
// addresses standing at the start of a line (alone, in angle brackets or
// quotes, after a lead-in word) with the lines that follow as their
// diagnostic.
func scanText(text string, top textproto.Header, rh []Field) []*rcpt {
	if !isBounceLike(top) {
		return nil
	}
	excl := senders(top, rh)
	ls := lines(text)
	type anchor struct {
		line int
		addr string
		rest string
		cmd  string // the SMTP command the line shows the address in
		sent bool   // a Sendmail error line, "554 <a>... text"
	}
	var anchors []anchor
	for i, l := range ls {
		t := strings.TrimLeft(l, " \t>")
		if !strings.Contains(t, "@") {
			continue
		}
		as := findAddrs(t)
		if len(as) == 0 {
			continue
		}
		a := as[0]
		lead := strings.ToLower(strings.TrimSpace(strings.Trim(strings.TrimSpace(t[:a.start]), `<"'(:[`)))
		lead = strings.TrimSpace(strings.TrimSuffix(lead, ":"))
		malformed := false
		if k := strings.Index(t, ": malformed address:"); k > 0 {
			// Exim: "text <a>: malformed address: <a> may not follow
			// ...": the recipient is the address before the colon.
			for _, s := range as {
				if s.end <= k {
					a, malformed = s, true
				}
			}
		}
		if !malformed && !leadIns[lead] && !leadInEnd(lead) && !replyLead(lead) {
			continue
		}
		if isDaemon(a.addr) || excl[strings.ToLower(a.addr)] && !qmailLine(t, a) {
			continue
		}
		if lead == "to" && i+1 < len(ls) && headerSummary(ls[i+1]) {
			// "Your message / To: a / Subject: ... / did not reach the
			// following recipient(s)": the header of the message
			// returned, not a recipient.
			continue
		}
		rest := strings.TrimLeft(t[a.end:], `>"' :.;,`)
		if leadInEnd(lead) || lead != "" && namesReason(lead) {
			// "Unknown user: a", "Unable to deliver message to <a>":
			// the words before the address are part of what the
			// bounce says about it.
			rest = strings.TrimRight(strings.TrimSpace(t[:a.start]), "<\"'([") + " " + rest
		}
		if n := len(anchors); n > 0 && strings.EqualFold(anchors[n-1].addr, a.addr) && i-anchors[n-1].line < 4 {
			// The address again in the lines of its own diagnostic.
			continue
		}
		cmd := ""
		if strings.HasSuffix(lead, "rcpt to") || lead == "rcpt" {
			// ">>> RCPT To:<a>" in a session transcript: what follows
			// is the reply to RCPT.
			cmd = "RCPT"
		}
		sent := replyLead(lead)
		if sent {
			// The reply code and status belong to the diagnostic.
			rest = lead + " " + rest
		}
		anchors = append(anchors, anchor{i, a.addr, rest, cmd, sent})
	}
	var out []*rcpt
	byAddr := map[string]*rcpt{}
	for k, a := range anchors {
		end := len(ls)
		if k+1 < len(anchors) {
			end = anchors[k+1].line
		}
		if a.sent {
			// A Sendmail error line stands alone; the server's reply it
			// reports is in the "<<<" lines of the transcript above it,
			// after the ">>>" command they answer.
			prev := 0
			if k > 0 {
				prev = anchors[k-1].line + 1
			}
			cmd, reply := transcriptAbove(ls[prev:a.line])
			if a.cmd == "" {
				a.cmd = cmd
			}
			a.rest = strings.TrimSpace(reply + " " + a.rest)
			end = a.line + 1
		}
		var b strings.Builder
		b.WriteString(a.rest)
		j := a.line + 1
		// An empty anchor line takes its diagnostic from the next paragraph.
		if strings.TrimSpace(a.rest) == "" {
			for j < end && strings.TrimSpace(ls[j]) == "" {
				j++
			}
		}
		for ; j < end && strings.TrimSpace(ls[j]) != ""; j++ {
			b.WriteString(" ")
			b.WriteString(strings.TrimSpace(ls[j]))
		}
		// A diagnostic that ends in a colon goes on after a blank line; so
		// does one without any SMTP reply or status code, whose server
		// reply often follows in a paragraph of its own ("The error that
		// the other server returned was:", a session transcript).
		for k := 0; k < maxDiagParagraphs && j < end; k++ {
			t := strings.TrimSpace(b.String())
			if !strings.HasSuffix(t, ":") && (findReplyCode(t) != "" || findStatus(t) != "") && !unfinishedReply(t) {
				break
			}
			for j < end && strings.TrimSpace(ls[j]) == "" {
				j++
			}
			if j < end && isSeparatorLine(ls[j]) {
				break
			}
			for ; j < end && strings.TrimSpace(ls[j]) != ""; j++ {
				b.WriteString(" ")
				b.WriteString(strings.TrimSpace(ls[j]))
			}
		}
		diag := clip(squeeze(b.String()))
		if !failureReply(diag) && !namesReason(asciiLower(diag)) {
			// Nothing about the failure after the address: some bounces
			// (au EZweb, Verizon, several Japanese carriers) put the
			// reason in the lines before the list of recipients.
			prev := 0
			if k > 0 {
				prev = anchors[k-1].line + 1
			}
			above := clip(squeeze(strings.Join(lastLines(ls[prev:a.line], maxLinesAbove), " ")))
			if failureReply(above) || namesReason(asciiLower(above)) {
				diag = clip(strings.TrimSpace(above + " " + diag))
			}
		}
		key := strings.ToLower(a.addr)
		if r, ok := byAddr[key]; ok {
			if diag != "" && !strings.Contains(r.diag, diag) {
				r.diag = squeeze(r.diag + " " + diag)
			}
			continue
		}
		r := &rcpt{address: a.addr, diag: diag, command: a.cmd}
		byAddr[key] = r
		out = append(out, r)
	}
	var whole string
	vague := false
	if len(out) == 0 {
		whole = clip(squeeze(text[:min(len(text), 2*maxDiagBytes)]))
		// A text that says nothing about why is a diagnostic, but not
		// one that a reason can be held on.
		vague = !failureReply(whole) && findStatus(whole) == "" && !namesReason(asciiLower(whole))
	}
	if len(out) == 0 {
		for _, v := range top.Values("X-Failed-Recipients") {
			for _, a := range findAddrs(v) {
				if byAddr[strings.ToLower(a.addr)] == nil {
					r := &rcpt{address: a.addr, diag: whole, vague: vague}
					byAddr[strings.ToLower(a.addr)] = r
					out = append(out, r)
				}
			}
		}
	}
	if len(out) == 0 {
		// Any address in the error text that is not the sender's.
		for _, a := range findAddrs(text) {
			if !excl[strings.ToLower(a.addr)] && !isDaemon(a.addr) {
				out = append(out, &rcpt{address: a.addr, diag: whole, vague: vague})
				break
			}
		}
	}
	if len(out) == 0 && strings.TrimSpace(text) != "" {
		if a := firstAddr(headerValue(rh, "To")); a != "" {
			out = append(out, &rcpt{address: a, diag: whole, vague: vague})
		}
	}
	return out
}

// senders returns the addresses of the original sender, which a bounce
// mentions but never reports on.
func senders(top textproto.Header, rh []Field) map[string]bool {
	m := map[string]bool{}
	add := func(v string) {
		for _, a := range findAddrs(v) {
			m[strings.ToLower(a.addr)] = true
		}
	}
	for _, k := range []string{"To"} {
		for _, v := range top.Values(k) {
			add(v)
		}
	}
	add(headerValue(rh, "From"))
	add(headerValue(rh, "Return-Path"))
	add(headerValue(rh, "Sender"))
	add(headerValue(rh, "Reply-To"))
	return m
}

// isDaemon reports whether a is a mailer daemon's or postmaster's address.
func isDaemon(a string) bool {
	l := strings.ToLower(a)
	return strings.HasPrefix(l, "mailer-daemon@") || strings.HasPrefix(l, "postmaster@") ||
		strings.HasPrefix(l, "mail-daemon@")
}

// mergeScan adds what the text says about each recipient of a
// delivery-status part when the part itself gives no diagnostic.
func mergeScan(rs []*rcpt, scan []*rcpt) {
	by := map[string]*rcpt{}
	for _, s := range scan {
		by[strings.ToLower(s.address)] = s
	}
	for _, r := range rs {
		s := by[strings.ToLower(r.address)]
		if s == nil {
			s = by[strings.ToLower(r.original)]
		}
		if s == nil && len(rs) == 1 && len(scan) == 1 {
			s = scan[0]
		}
		if s != nil {
			if !plainAddr(r.address) && plainAddr(s.address) {
				// A Final-Recipient without a usable address ("@host",
				// a source route): the text names the recipient.
				r.address = s.address
			}
			r.context = s.diag
			if r.command == "" {
				r.command = s.command
			}
			switch {
			case r.diag == "":
				r.diag = s.diag
			case strings.Contains(s.diag, "(in reply to ") && len(s.diag) > len(r.diag) &&
				len(s.diag) < len(r.diag)+maxPostfixExtra && strings.Contains(s.diag, squeeze(r.diag)):
				// Postfix's text says which command the reply answered
				// ("... (in reply to RCPT TO command)"), which its
				// Diagnostic-Code leaves out.
				r.diag = s.diag
			case firstLineOnly(r.diag) && len(s.diag) > len(r.diag) && strings.Contains(s.diag, squeeze(r.diag)):
				// Sendmail keeps only the first line of a multi-line
				// reply ("550-5.7.1 ...") in Diagnostic-Code; the
				// transcript in the text has all of it.
				r.diag = s.diag
			}
		}
	}
}

// maxDiagParagraphs bounds how many paragraphs after a recipient's line are
// read for its diagnostic.
const maxDiagParagraphs = 4

// isSeparatorLine reports whether l introduces the returned message.
func isSeparatorLine(l string) bool {
	low := strings.ToLower(l)
	for _, s := range separators {
		if strings.Contains(low, s) {
			return true
		}
	}
	return false
}

// leadInEnd reports whether a phrase before an address ends in a word that
// introduces a recipient: "... delivering your mail to <a>".
func leadInEnd(lead string) bool {
	if strings.HasSuffix(lead, "from") || strings.Contains(lead, "mail from") || strings.Contains(lead, "sender") {
		return false
	}
	for _, w := range []string{" to", " for", " recipient", " address", " user", " mailbox", " rcpt"} {
		if strings.HasSuffix(lead, w) {
			return true
		}
	}
	return false
}

// maxDiagBytes bounds the diagnostic kept per recipient.
const maxDiagBytes = 4 << 10

// clip cuts s to maxDiagBytes at a character boundary.
func clip(s string) string {
	if len(s) <= maxDiagBytes {
		return s
	}
	i := maxDiagBytes
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}

// maxPostfixExtra bounds what Postfix's text adds to a reply: the host
// ("host mx.example.com[192.0.2.1] said: ") and the command ("(in reply to
// RCPT TO command)").
const maxPostfixExtra = 200

// firstLineOnly reports whether a diagnostic is the first line of a
// multi-line SMTP reply (RFC 5321 section 4.2.1: "550-...").
func firstLineOnly(d string) bool {
	d = strings.TrimSpace(d)
	return len(d) > 4 && isDigit(d[0]) && isDigit(d[1]) && isDigit(d[2]) && d[3] == '-' &&
		!strings.Contains(d[4:], d[:3]+" ")
}

// unfinishedReply reports whether t has the first line of a multi-line SMTP
// reply ("550-...") but not its last one ("550 ...").
func unfinishedReply(t string) bool {
	c := findReplyCode(t)
	if c == "" {
		return false
	}
	i := strings.Index(t, c+"-")
	return i >= 0 && !strings.Contains(t[i:], c+" ")
}

// replyLead reports whether the words before an address are an SMTP reply
// code, optionally with a status code: Sendmail's per-recipient error lines
// ("554 <a>... Host unknown", "550 5.1.1 <a>... User unknown").
func replyLead(lead string) bool {
	code, st, _ := strings.Cut(lead, " ")
	if len(code) != 3 || (code[0] != '4' && code[0] != '5') || !isDigit(code[1]) || !isDigit(code[2]) {
		return false
	}
	return st == "" || findStatus(st) == st
}

// transcriptAbove returns the last SMTP command (">>> RCPT To:<a>") of a
// session transcript and the server's reply lines after it ("<<< 550 ...").
func transcriptAbove(ls []string) (cmd, reply string) {
	start := -1
	for i := len(ls) - 1; i >= 0; i-- {
		t := strings.TrimSpace(ls[i])
		if strings.HasPrefix(t, ">>> ") {
			cmd = strings.ToUpper(strings.Fields(t[4:] + " x")[0])
			if len(cmd) > 4 {
				cmd = cmd[:4]
			}
			start = i + 1
			break
		}
		if strings.HasPrefix(strings.ToLower(t), "while talking to") {
			break
		}
	}
	if start < 0 {
		return "", ""
	}
	var b strings.Builder
	for _, l := range ls[start:] {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "<<< ") {
			b.WriteString(t[4:])
			b.WriteByte(' ')
		}
	}
	return cmd, strings.TrimSpace(b.String())
}

// maxLinesAbove bounds how many lines before a recipient's address are read
// when nothing follows it.
const maxLinesAbove = 6

// lastLines returns the last n non-blank lines of ls.
func lastLines(ls []string, n int) []string {
	var out []string
	for i := len(ls) - 1; i >= 0 && len(out) < n; i-- {
		if t := strings.TrimSpace(ls[i]); t != "" {
			out = append(out, t)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// qmailLine reports whether t is a line with nothing but the address and
// a colon ("<a>:" of qmail, "a:" of Exim), which names a recipient even when
// it is the sender's own address.
func qmailLine(t string, a addrSpan) bool {
	rest := strings.TrimSpace(t[a.end:])
	if a.start == 1 && t[0] == '<' {
		return rest == ">:"
	}
	return a.start == 0 && rest == ":"
}

// failureReply reports whether s has an SMTP reply code of a failure, 4xx
// or 5xx.
func failureReply(s string) bool {
	for len(s) > 0 {
		c := findReplyCode(s)
		if c == "" {
			return false
		}
		if c[0] == '4' || c[0] == '5' {
			return true
		}
		s = s[strings.Index(s, c)+3:]
	}
	return false
}

// headerSummary reports whether l is a line of a summary of the returned
// message's header (Exchange: "  Subject: ...", "  Sent: ...").
func headerSummary(l string) bool {
	l = strings.ToLower(strings.TrimSpace(l))
	return strings.HasPrefix(l, "subject:") || strings.HasPrefix(l, "cc:") || strings.HasPrefix(l, "sent:")
}
