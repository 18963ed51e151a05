package dsn

import (
	"mime"
	nettextproto "net/textproto"
	"strings"

	"github.com/emersion/go-message/textproto"
)

var wordDecoder = mime.WordDecoder{}

// decodeWords decodes RFC 2047 encoded words, leaving s as is on failure.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	if d, err := wordDecoder.DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// analyze turns the collected parts into a report.
func analyze(c *collector) *Report {
	rep := &Report{Recipients: []Recipient{}, ReturnedHeaders: []Field{}}
	top := c.top
	body := joinTexts(c.texts)
	c.body = body

	// The error section and the returned message.
	errText, retText, temporary := splitReturned(body)
	returned := c.returned
	if !c.hasReturn {
		returned = retText
	}
	rh := readLooseHeader(returned)
	rep.ReturnedHeaders = append(rep.ReturnedHeaders, rh...)
	rep.MessageID = strings.Trim(strings.TrimSpace(headerValue(rh, "Message-Id")), "<>")
	rep.Tag = strings.TrimSpace(headerValue(rh, "X-Answer-Relay-Id"))
	rep.VERP = verp(top)

	if strings.EqualFold(strings.TrimSpace(top.Get("X-Apple-Unsubscribe")), "true") {
		// Apple Mail's unsubscribe request, sent on the user's behalf to
		// the List-Unsubscribe address: an opt-out complaint.
		rep.Kind = KindFeedback
		rep.Recipients = append(rep.Recipients, Recipient{Address: firstAddr(top.Get("From")),
			Reason: ReasonFeedback, FeedbackType: "opt-out"})
		return rep
	}
	if c.feedback == "" && isHotmailComplaint(top) {
		// Microsoft's junk mail reporting program (JMRP) forwards the
		// reported message without a feedback-report part; the reporting
		// user's address is in X-HmXmrOriginalRecipient.
		rep.Kind = KindFeedback
		a := firstAddr(headerValue(rh, "X-Hmxmroriginalrecipient"))
		if a == "" {
			a = firstAddr(headerValue(rh, "To"))
		}
		rep.Recipients = append(rep.Recipients, Recipient{Address: a, Reason: ReasonFeedback, FeedbackType: "abuse"})
		return rep
	}
	if c.feedback != "" || strings.Contains(strings.ToLower(top.Get("Content-Type")), "feedback-report") {
		rep.Kind = KindFeedback
		rep.Recipients = feedback(c.feedback, rh, top)
		return rep
	}

	if len(c.status) == 0 {
		if kind, rs, fb, mta, ok := sesReport(body); ok {
			rep.Kind, rep.ReportingMTA = kind, mta
			if kind == KindFeedback {
				rep.Recipients = fb
				return rep
			}
			for _, r := range rs {
				rep.Recipients = append(rep.Recipients, finish(r, false))
			}
			return rep
		}
	}
	var rcpts []*rcpt
	for _, s := range c.status {
		ds := parseStatus(s)
		if ds.reportingMTA != "" && rep.ReportingMTA == "" {
			rep.ReportingMTA = ds.reportingMTA
		}
		if ds.envid != "" && rep.EnvelopeID == "" {
			rep.EnvelopeID = ds.envid
		}
		rcpts = append(rcpts, ds.rcpts...)
	}
	if len(rcpts) == 0 && hasStatusFields(errText) {
		// Delivery-status fields written into the text part (Amazon
		// WorkMail's "Technical report", some gateways): read them as if
		// they were a message/delivery-status part.
		ds := parseStatus(errText)
		for _, r := range ds.rcpts {
			if r.status != "" || r.action != "" || r.diag != "" {
				rcpts = append(rcpts, r)
			}
		}
		if len(rcpts) > 0 && rep.ReportingMTA == "" {
			rep.ReportingMTA = ds.reportingMTA
		}
	}
	if len(rcpts) == 0 {
		rcpts = fmlNotice(top, errText)
	}
	scan := scanText(errText, top, rh)
	if len(rcpts) == 0 {
		if a := autoReply(top, body); a != "" && !fromDaemon(top) && !carriesCodes(scan) {
			// An automatic reply (RFC 3834) that merely mentions
			// addresses: no bounce.
			rep.Kind = KindAutoReply
			rep.Recipients = append(rep.Recipients, Recipient{Address: a, Reason: ReasonVacation})
			return rep
		}
		rcpts = scan
	} else {
		mergeScan(rcpts, scan)
		exitStatusDiag(rcpts, errText)
		ezwebNotice(rcpts, errText, rep.ReportingMTA, top.Get("From"))
		if greetingRefused(errText) {
			for _, r := range rcpts {
				if r.command == "" {
					r.command = "CONN"
				}
			}
		}
	}
	if len(rcpts) > 0 {
		rep.Kind = KindDSN
		if rep.ReportingMTA == "" {
			rep.ReportingMTA = reportingMTA(top)
		}
		group := len(c.status) == 0 && strings.Contains(strings.ToLower(top.Get("X-Failed-Recipients")), "@googlegroups.")
		for _, r := range rcpts {
			if group && r.reason == "" {
				// Google Groups refuses posts from non-members and to
				// groups that do not exist; either way the sender is
				// refused.
				r.reason = ReasonRejected
			}
			r.reporter = rep.ReportingMTA
			rep.Recipients = append(rep.Recipients, finish(r, temporary))
		}
		return rep
	}
	if a := autoReply(top, body); a != "" {
		rep.Kind = KindAutoReply
		rep.Recipients = append(rep.Recipients, Recipient{Address: a, Reason: "vacation"})
		return rep
	}
	rep.Kind = KindNone
	return rep
}

// joinTexts concatenates the text parts, leaving out HTML when there is
// plain text.
func joinTexts(ts []textPart) string {
	plain := false
	for _, t := range ts {
		if t.mediaType != "text/html" {
			plain = true
		}
	}
	var use []string
	size := 0
	for _, t := range ts {
		s := t.text
		if t.mediaType == "text/html" {
			if plain {
				continue
			}
			s = stripHTML(s)
		}
		use = append(use, s)
		size += len(s) + 1
	}
	if len(use) == 1 && strings.HasSuffix(use[0], "\n") {
		return use[0]
	}
	var b strings.Builder
	b.Grow(size)
	for _, s := range use {
		b.WriteString(s)
		b.WriteString("\n")
	}
	return b.String()
}

// readLooseHeader reads the header fields at the start of s, skipping
// leading blank lines and tolerating indentation and junk.
func readLooseHeader(s string) []Field {
	s = strings.TrimLeft(s, " \t\r\n")
	if s == "" {
		return nil
	}
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i+1]
	}
	out := readFields(s)
	if len(out) == 0 {
		// Indented or otherwise damaged headers: read line by line.
		for _, l := range lines(s) {
			name, val, ok := strings.Cut(strings.TrimSpace(l), ":")
			if !ok || name == "" || strings.ContainsAny(name, " \t") {
				continue
			}
			out = append(out, Field{Name: textprotoKey(name), Value: strings.TrimSpace(val)})
		}
	}
	return out
}

func textprotoKey(k string) string {
	b := []byte(strings.ToLower(k))
	up := true
	for i, c := range b {
		if up && c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
		up = c == '-'
	}
	return string(b)
}

// headerValue returns the first value of the named field.
func headerValue(fs []Field, name string) string {
	for _, f := range fs {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// verp returns the address the report was sent to when it is a variable
// envelope return path, prefix+id@domain.
func verp(h textproto.Header) string {
	for _, k := range []string{"X-Original-To", "Delivered-To", "Envelope-To", "To"} {
		for _, v := range h.Values(k) {
			a := firstAddr(v)
			if at := strings.IndexByte(a, '@'); at > 0 {
				if p := strings.IndexByte(a[:at], '+'); p > 0 && p < at-1 {
					return a
				}
			}
		}
	}
	return ""
}

// reportingMTA guesses the reporting host of a non-standard bounce from the
// address it was sent from.
func reportingMTA(h textproto.Header) string {
	a := firstAddr(h.Get("From"))
	if at := strings.IndexByte(a, '@'); at > 0 {
		return a[at+1:]
	}
	return ""
}

// feedback builds the recipient list of a feedback report (RFC 5965
// section 3.1): the complaint is about the message sent to the reporting
// user.
func feedback(body string, rh []Field, top textproto.Header) []Recipient {
	fields := readLooseHeader(body)
	ftype := strings.ToLower(strings.TrimSpace(headerValue(fields, "Feedback-Type")))
	var addrs []string
	for _, f := range fields {
		if strings.EqualFold(f.Name, "Original-Rcpt-To") || strings.EqualFold(f.Name, "Removal-Recipient") {
			if a := firstAddr(f.Value); a != "" {
				addrs = append(addrs, a)
			}
		}
	}
	if len(addrs) == 0 {
		if a := firstAddr(headerValue(rh, "To")); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		addrs = append(addrs, "")
	}
	if ftype == "" {
		ftype = "abuse"
	}
	out := make([]Recipient, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, Recipient{Address: a, Reason: "feedback", FeedbackType: ftype})
	}
	return out
}

// autoReply returns the replying address when the message is an automatic
// reply (RFC 3834 section 5, or the fields and subjects common auto-responders
// use), or "".
func autoReply(h textproto.Header, body string) string {
	as := strings.ToLower(h.Get("Auto-Submitted"))
	subj := strings.ToLower(decodeWords(h.Get("Subject")))
	prec := strings.ToLower(h.Get("Precedence"))
	is := strings.HasPrefix(as, "auto-replied") || h.Get("X-Autoreply") != "" || h.Get("X-Autorespond") != "" ||
		h.Get("X-Auto-Response-Suppress") != "" && strings.Contains(subj, "auto") ||
		prec == "auto_reply" || strings.HasPrefix(subj, "auto:") || strings.HasPrefix(subj, "out of office") ||
		strings.HasPrefix(subj, "automatic reply") || strings.HasPrefix(subj, "auto reply") ||
		strings.HasPrefix(subj, "auto-reply") || strings.HasPrefix(subj, "autoreply") ||
		strings.Contains(subj, "vacation") || strings.HasPrefix(subj, "away")
	if !is {
		return ""
	}
	return firstAddr(h.Get("From"))
}

// hasStatusFields reports whether text has a Final-Recipient field at the
// start of a line, as a delivery-status part would.
func hasStatusFields(text string) bool {
	for i := 0; ; {
		k := strings.Index(text[i:], "inal-")
		if k < 0 {
			return false
		}
		at := i + k - 1
		if at >= 0 && (at == 0 || text[at-1] == '\n') && len(text) >= at+len("final-recipient:") &&
			strings.EqualFold(text[at:at+len("final-recipient:")], "final-recipient:") {
			return true
		}
		i += k + 5
	}
}

// isHotmailComplaint reports whether h is the header of a complaint that
// Microsoft's junk mail reporting program sends.
func isHotmailComplaint(h textproto.Header) bool {
	return strings.Contains(strings.ToLower(h.Get("From")), "staff@hotmail.com") &&
		strings.Contains(strings.ToLower(h.Get("Subject")), "complaint about message from")
}

// fromDaemon reports whether h is from a mailer daemon or postmaster.
func fromDaemon(h textproto.Header) bool {
	from := strings.ToLower(h.Get("From"))
	for _, s := range []string{"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon"} {
		if strings.Contains(from, s) {
			return true
		}
	}
	return false
}

// carriesCodes reports whether a recipient's diagnostic has an SMTP reply
// or status code, the mark of a delivery failure.
func carriesCodes(rs []*rcpt) bool {
	for _, r := range rs {
		if findReplyCode(r.diag) != "" || findStatus(r.diag) != "" {
			return true
		}
	}
	return false
}

// readFields reads header fields (RFC 5322 section 2.2) from s up to the
// first line that is no field, the way the MIME reader does: a field's
// folded lines are joined with single spaces, names are canonicalised.
func readFields(s string) []Field {
	out, _ := scanFields(s, true, nil)
	return out
}

// scanFields is readFields that also returns how many bytes of s the
// fields took; decode tells whether encoded words are decoded, keep (when
// not nil) which fields are kept, by canonical name.
func scanFields(s string, decode bool, keep map[string]bool) ([]Field, int) {
	var out []Field
	if s == "" || s[0] == ' ' || s[0] == '\t' {
		return nil, 0
	}
	all := len(s)
	for s != "" {
		used := all - len(s)
		// One field: its first line and the indented lines after it.
		end := 0
		for {
			k := strings.IndexByte(s[end:], '\n')
			if k < 0 {
				end = len(s)
				break
			}
			end += k + 1
			if end >= len(s) || (s[end] != ' ' && s[end] != '\t') {
				break
			}
		}
		kv := s[:end]
		s = s[end:]
		if strings.TrimRight(kv, "\r\n") == "" {
			return out, all - len(s)
		}
		i := strings.IndexByte(kv, ':')
		if i < 0 {
			return out, used
		}
		name := strings.Trim(kv[:i], " \t")
		for j := 0; j < len(name); j++ {
			if c := name[j]; c < 33 || c > 126 {
				return out, used
			}
		}
		if name == "" {
			continue
		}
		key := nettextproto.CanonicalMIMEHeaderKey(name)
		if keep != nil && !keep[key] {
			continue
		}
		v := unfold(kv[i+1:])
		if decode {
			v = decodeWords(v)
		}
		out = append(out, Field{Name: key, Value: v})
	}
	return out, all
}

// unfold joins the lines of a folded field value with single spaces,
// trimming each.
func unfold(v string) string {
	if strings.IndexByte(v, '\n') < 0 {
		return strings.Trim(strings.TrimSuffix(v, "\r"), " \t")
	}
	var b strings.Builder
	b.Grow(len(v))
	for _, l := range strings.Split(v, "\n") {
		l = strings.Trim(strings.TrimSuffix(l, "\r"), " \t")
		if l == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(l)
	}
	return b.String()
}

// exitStatusDiag gives a recipient whose Diagnostic-Code is only a local
// mailer's exit status ("X-Unix; 255") Sendmail's error line about it in
// the text ("554 5.3.0 unknown mailer error 255"): a reply code, an
// enhanced status code of the same class and the error.
func exitStatusDiag(rs []*rcpt, text string) {
	for _, r := range rs {
		d := strings.TrimSpace(r.diag)
		if d == "" || strings.TrimLeft(d, "0123456789") != "" {
			continue
		}
		for _, l := range lines(text) {
			l = strings.TrimSpace(l)
			if len(l) < 10 || (l[0] != '4' && l[0] != '5') || !isDigit(l[1]) || !isDigit(l[2]) || l[3] != ' ' || l[4] != l[0] {
				continue
			}
			if st := findStatus(l[4:]); st != "" && strings.HasPrefix(l[4:], st) && len(l) > 4+len(st) && l[4+len(st)] == ' ' {
				r.diag = l
				break
			}
		}
	}
}

// greetingRefused reports whether a Sendmail session transcript shows the
// server's reply right after the connection ("... while talking to
// mx.example.org.:" then "<<< 554 ..." before any ">>>" command): the server
// refused the client at its greeting.
func greetingRefused(text string) bool {
	i := strings.Index(text, "... while talking to ")
	if i < 0 {
		return false
	}
	for _, l := range lines(text[i:])[1:] {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, ">>> "):
			return false
		case strings.HasPrefix(l, "<<< "):
			return true
		case l != "":
			return false
		}
	}
	return false
}

// fmlErrors are the wordings of the fml mailing list manager's notices to
// a poster, by reason: first in the notice's text, then in its Subject.
var fmlErrors = []struct {
	reason       string
	text, titles []string
}{
	{ReasonRejected, []string{" header may cause mail loop", "NOT MEMBER article from ", "reject mail from ",
		"reject spammers:", "You are not a member of this mailing list"},
		[]string{" are not member", "NOT MEMBER article from ", "reject mail ", "Spam mail from a spammer is rejected"}},
	{ReasonSystemError, []string{" has detected a loop condition so that", "Duplicated Message-ID", "Loop Back Warning:"},
		[]string{"fml system error message", "Loop Alert: ", "Loop Back Warning: ", "WARNING: UNIX FROM Loop"}},
	{ReasonSecurityError, []string{"Security alert:"}, []string{"Security Alert"}},
}

// fmlNotice reads a notice of the fml mailing list manager (X-MLServer:
// fml, sent by the list's "-admin" address): the address in angle brackets
// on a line of the text is the list or message it is about ("You are not a
// member of this mailing list <list@example.org>."), the wording says why.
func fmlNotice(top textproto.Header, text string) []*rcpt {
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(top.Get("X-Mlserver"))), "fml") ||
		!strings.Contains(strings.ToLower(top.Get("From")), "-admin@") {
		return nil
	}
	var rs []*rcpt
	var cur *rcpt
	for _, l := range lines(text) {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		i, j := strings.IndexByte(l, '<'), strings.LastIndexByte(l, '>')
		if a := firstAddr(l); i > 0 && j > i && a != "" {
			cur = &rcpt{address: a, diag: l}
			rs = append(rs, cur)
			continue
		}
		if cur != nil {
			cur.diag += " " + l
		}
	}
	subject := decodeWords(top.Get("Subject"))
	for _, r := range rs {
	find:
		for _, e := range fmlErrors {
			for _, p := range e.text {
				if strings.Contains(r.diag, p) {
					r.reason, r.final = e.reason, true
					break find
				}
			}
		}
		if r.reason != "" {
			continue
		}
	title:
		for _, e := range fmlErrors {
			for _, p := range e.titles {
				if strings.Contains(subject, p) {
					r.reason, r.final = e.reason, true
					break title
				}
			}
		}
	}
	return rs
}

// ezwebNotices are the sentences with which au (KDDI) EZweb heads the list
// of the recipients its notice is about; each names the reason for all of
// them, whatever the SMTP reply on a recipient's own line says.
var ezwebNotices = []struct{ sentence, reason string }{
	{"the user(s) account is disabled", ReasonSuspend},
	{"the user(s) account is temporarily limited", ReasonSuspend},
	{"the user(s) account is temporarily over quota", ReasonMailboxFull},
}

// ezwebNotice gives the recipients of an EZweb notice the reason its
// heading sentence names.
func ezwebNotice(rs []*rcpt, text, mta, from string) {
	if !hasSuffixFold(mta, ".ezweb.ne.jp") && !containsFold(from, "@ezweb.ne.jp") {
		return
	}
	low := strings.ToLower(text)
	for _, n := range ezwebNotices {
		if !strings.Contains(low, n.sentence) {
			continue
		}
		for _, r := range rs {
			if r.reason == "" {
				r.reason, r.final = n.reason, true
			}
		}
		return
	}
}

// hasSuffixFold reports whether s ends in suffix, ignoring ASCII case.
func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// containsFold reports whether s contains sub, ignoring ASCII case, without
// making a lower-case copy.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
