package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"sync"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // charsets of text parts
	"github.com/emersion/go-message/textproto"
)

// Limits that bound the memory Parse uses whatever the input.
const (
	// maxPartBytes is how much of one decoded part is kept; the rest is
	// read and dropped.
	maxPartBytes = 256 << 10
	// maxTextBytes is how much decoded text of all parts together is kept.
	maxTextBytes = 1 << 20
	// maxDepth is how deep multiparts are followed; deeper ones are skipped.
	maxDepth = 16
	// maxParts is how many body parts are looked at; the rest are skipped.
	maxParts = 512
	// maxHeaderBytes bounds one header block; the guard ends a longer one.
	maxHeaderBytes = 256 << 10
	// maxLineBytes bounds one line; the guard breaks a longer one.
	maxLineBytes = 64 << 10
)

// ErrEmpty is returned by Parse for an input with no header at all.
var ErrEmpty = errors.New("dsn: empty message")

// Parse reads one raw message (RFC 5322) and reports what it says about the
// delivery of an earlier message. A message that is no report gives a Report
// with no recipients and a nil error; an error is returned only when the
// input cannot be read as a message at all (nothing but an I/O error or an
// empty input). Parse reads r to its end but keeps only a bounded prefix of
// every part, so memory stays bounded for input of any size.
func Parse(r io.Reader) (*Report, error) {
	rep, _, err := parse(r)
	return rep, err
}

// parse is Parse that also returns the decoded parts it read.
func parse(r io.Reader) (*Report, *collector, error) {
	return parseWith(r, false)
}

// parseWith is parse; nested marks a message found inside another one.
func parseWith(r io.Reader, nested bool) (*Report, *collector, error) {
	g := &guard{r: r, header: true}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(g)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	// An mbox "From " line before the header is no header field.
	if b, err := br.Peek(5); err == nil && string(b) == "From " {
		if _, err := br.ReadSlice('\n'); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, nil, ErrEmpty
		}
	}
	h, rest, herr := readTopHeader(br)
	if herr != nil {
		return nil, nil, fmt.Errorf("dsn: reading header: %w", herr)
	}
	if h.Len() == 0 && rest == "" {
		if _, err := br.Peek(1); err != nil {
			return nil, nil, ErrEmpty
		}
	}
	c := &collector{top: h, nested: nested}
	var body io.Reader = br
	if rest != "" {
		// The header ended at a line that is no field: the rest is body,
		// as a MIME reader would take it.
		body = io.MultiReader(strings.NewReader(rest), br)
	}
	c.entity(h, body, 0)
	// Read the rest so that a caller streaming from a network sees the
	// whole message consumed; nothing of it is kept.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, nil, fmt.Errorf("dsn: reading message: %w", err)
	}
	if c.err != nil {
		return nil, nil, fmt.Errorf("dsn: reading message: %w", c.err)
	}
	rep := analyze(c)
	if rep.Kind != KindFeedback && len(c.status) == 0 && c.hasReturn && !c.nested && !strongReport(rep) &&
		isReportHeader(readLooseHeader(c.returned)) {
		// A bounce forwarded as an attachment (a postmaster passing
		// one on, a mail filter quarantining it): read the bounce
		// itself, one level deep.
		if inner, ic, err := parseNested(strings.NewReader(c.returned)); err == nil && ic != nil &&
			inner.Kind == KindDSN && strongReport(inner) {
			return inner, c, nil
		}
	}
	if rep.Kind != KindFeedback && len(c.status) == 0 && !c.hasReturn && !c.nested && !strongReport(rep) {
		// A bounce pasted into the text of another message (a help desk
		// passing one on), starting at its mbox "From " line: read the
		// bounce itself, one level deep.
		if i := pastedMessage(c.body); i >= 0 {
			if inner, ic, err := parseNested(strings.NewReader(c.body[i:])); err == nil && ic != nil &&
				inner.Kind == KindDSN && (len(ic.status) > 0 || strongReport(inner)) {
				return inner, c, nil
			}
		}
	}
	if rep.Kind != KindFeedback && len(c.status) == 0 && !c.hasReturn && !c.nested &&
		!containsFold(c.top.Get("Content-Type"), "multipart/report") && !containsFold(c.top.Get("From"), "mailer-daemon") &&
		!containsFold(c.top.Get("From"), "postmaster") {
		// A bounce forwarded inline as quoted text ("Begin forwarded
		// message:" and "> " before every line): read the bounce without
		// the quotation marks, one level deep.
		if q := quotedMessage(c.body); q != "" {
			if inner, ic, err := parseNested(strings.NewReader(q)); err == nil && ic != nil &&
				inner.Kind == KindDSN && (len(ic.status) > 0 || strongReport(inner)) {
				return inner, c, nil
			}
		}
	}
	return rep, c, nil
}

// quotedMessage returns the message quoted in text ("> From: ..." lines),
// without the quotation marks, when its header is that of a delivery
// report; "" when there is none.
func quotedMessage(text string) string {
	if !strings.HasPrefix(text, ">") && !strings.Contains(text, "\n>") {
		return ""
	}
	ls := lines(text)
	for i := 0; i < len(ls); i++ {
		if !strings.HasPrefix(ls[i], ">") {
			continue
		}
		j := i
		var b strings.Builder
		for ; j < len(ls) && strings.HasPrefix(ls[j], ">"); j++ {
			l := strings.TrimPrefix(ls[j][1:], " ")
			b.WriteString(strings.TrimRight(l, " \t\r"))
			b.WriteByte('\n')
		}
		q := b.String()
		end := strings.Index(q, "\n\n")
		if end < 0 {
			end = len(q)
		}
		if isReportHeader(readLooseHeader(q[:end])) {
			return q
		}
		i = j
	}
	return ""
}

// pastedMessage returns where a message pasted into text starts: an mbox
// "From " line followed by the header of a delivery report; -1 when there
// is none.
func pastedMessage(text string) int {
	for off := 0; off < len(text); {
		i := strings.Index(text[off:], "\nFrom ")
		if i < 0 {
			return -1
		}
		start := off + i + 1
		off = start + 5
		end := strings.Index(text[start:], "\n\n")
		if end < 0 {
			end = len(text) - start
		}
		nl := strings.IndexByte(text[start:], '\n')
		if nl < 0 || nl >= end {
			continue
		}
		if isReportHeader(readLooseHeader(text[start+nl+1 : start+end])) {
			return start
		}
	}
	return -1
}

// parseNested is parse for a message found inside another one; it does not
// look further inside.
func parseNested(r io.Reader) (*Report, *collector, error) {
	return parseWith(r, true)
}

// strongReport reports whether some recipient of rep has an SMTP reply or
// status code in its diagnostic or a status field of its own.
func strongReport(rep *Report) bool {
	for _, r := range rep.Recipients {
		if failureReply(r.Diagnostic) || findStatus(r.Diagnostic) != "" {
			return true
		}
	}
	return false
}

// isReportHeader reports whether the header fields are those of a
// delivery report: a multipart/report, or a message from a mailer daemon.
func isReportHeader(fs []Field) bool {
	ct := strings.ToLower(headerValue(fs, "Content-Type"))
	from := strings.ToLower(headerValue(fs, "From"))
	return strings.Contains(ct, "multipart/report") || strings.Contains(from, "mailer-daemon") ||
		strings.Contains(from, "postmaster")
}

// readerPool keeps the buffered readers of Parse between calls.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// textPart is one decoded text part.
type textPart struct {
	mediaType string
	text      string
}

// collector gathers, while walking the MIME tree, the parts a report is made
// of.
type collector struct {
	top       textproto.Header
	texts     []textPart
	textBytes int
	status    []string // message/delivery-status bodies
	feedback  string   // message/feedback-report body
	returned  string   // returned message or its header
	hasReturn bool
	nested    bool   // the message was found inside another one
	body      string // the text parts joined, as analyze read them
	parts     int
	err       error // an I/O error of the underlying reader
}

// mediaType returns the lower-cased media type and parameters of h,
// tolerating malformed parameters.
func mediaType(h textproto.Header) (string, map[string]string) {
	v := h.Get("Content-Type")
	if v == "" {
		return "", nil
	}
	t, params, err := mime.ParseMediaType(v)
	if err != nil {
		t = strings.ToLower(strings.TrimSpace(strings.SplitN(v, ";", 2)[0]))
		params = looseParams(v)
	}
	return t, params
}

// looseParams reads the parameters of a Content-Type that mime.ParseMediaType
// rejects, such as duplicate or unquoted special characters.
func looseParams(v string) map[string]string {
	params := map[string]string{}
	for _, kv := range strings.Split(v, ";")[1:] {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.Trim(strings.TrimSpace(val), `"`)
		if _, dup := params[k]; !dup {
			params[k] = val
		}
	}
	return params
}

// entity looks at one entity: it descends into multiparts and keeps the
// decoded content of the parts that matter.
func (c *collector) entity(h textproto.Header, body io.Reader, depth int) {
	t, params := mediaType(h)
	if strings.HasPrefix(t, "multipart/") {
		if depth >= maxDepth || params["boundary"] == "" {
			return
		}
		boundary := params["boundary"]
		if br, ok := body.(*bufio.Reader); ok {
			var found bool
			if boundary, found = checkBoundary(br, boundary); !found {
				// No delimiter at all: a report whose MIME structure
				// was stripped. Read its body as plain text.
				var th textproto.Header
				if cte := h.Get("Content-Transfer-Encoding"); cte != "" {
					th.Set("Content-Transfer-Encoding", cte)
				}
				th.Set("Content-Type", "text/plain")
				c.entity(th, body, depth+1)
				return
			}
		}
		mr := textproto.NewMultipartReader(body, boundary)
		for {
			p, err := mr.NextPart()
			if err != nil {
				// io.EOF, or a malformed part: keep what was read.
				if !errors.Is(err, io.EOF) && isIOError(err) {
					c.err = err
				}
				return
			}
			c.parts++
			if c.parts > maxParts {
				return
			}
			c.entity(p.Header, p, depth+1)
		}
	}
	switch {
	case t == "message/delivery-status" || t == "message/global-delivery-status":
		c.status = append(c.status, c.read(h, body, false))
	case t == "message/feedback-report":
		c.feedback = c.read(h, body, false)
	case t == "message/rfc822" || t == "message/global" || t == "text/rfc822-headers" ||
		t == "message/rfc822-headers" || t == "message/global-headers" || t == "message/partial":
		if !c.hasReturn {
			c.returned = c.read(h, body, false)
			c.hasReturn = true
		}
	case t == "" || strings.HasPrefix(t, "text/"):
		if c.textBytes >= maxTextBytes {
			return
		}
		// HTML is stripped when it is used: only when there is no plain
		// text (joinTexts).
		s := c.read(h, body, true)
		c.textBytes += len(s)
		c.texts = append(c.texts, textPart{mediaType: t, text: s})
	}
}

// read decodes the body of an entity (transfer encoding and, for text,
// charset) and returns at most maxPartBytes of it.
func (c *collector) read(h textproto.Header, body io.Reader, text bool) string {
	var r io.Reader = body
	if needsDecoding(h) {
		e, err := message.New(message.Header{Header: h}, body)
		if e != nil && (err == nil || message.IsUnknownCharset(err)) {
			r = e.Body
		}
	}
	buf := bufferPool.Get().(*bytes.Buffer)
	buf.Reset()
	_, rerr := io.Copy(buf, io.LimitReader(r, maxPartBytes))
	if rerr != nil && isIOError(rerr) {
		c.err = rerr
	}
	b := buf.Bytes()
	if bytes.IndexByte(b, '\r') >= 0 {
		// CRLF to LF in place: the text is only ever split at LF.
		n := 0
		for i := 0; i < len(b); i++ {
			if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
				continue
			}
			b[n] = b[i]
			n++
		}
		b = b[:n]
	}
	s := string(b)
	if buf.Cap() <= maxPooledBuffer {
		bufferPool.Put(buf)
	}
	if text && !isUTF8(s) {
		s = latin1(s)
	}
	return s
}

// bufferPool keeps the buffers parts are decoded into between parts.
var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer is the largest buffer kept in bufferPool.
const maxPooledBuffer = 64 << 10

// ioError marks an error of the caller's reader, as opposed to a decoding
// error of the message.
type ioError struct{ err error }

func (e ioError) Error() string { return e.err.Error() }
func (e ioError) Unwrap() error { return e.err }

func isIOError(err error) bool {
	var e ioError
	return errors.As(err, &e)
}

// guard wraps the input so that no line and no header block is unbounded:
// it breaks lines longer than maxLineBytes and ends header blocks (at the
// start and after a boundary-like line) longer than maxHeaderBytes. It also
// marks errors of the underlying reader.
type guard struct {
	r       io.Reader
	err     error // held back until pending is drained
	pending []byte
	line    int  // bytes of the current line, without CR
	cr      bool // the current line has a trailing CR so far
	dash    int  // leading '-' of the current line, up to 2
	header  bool // in a header block
	hbytes  int  // bytes of the current header block
	hlines  int  // lines of the current header block
}

func (g *guard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	switch {
	case len(g.pending) > 0:
		n = copy(p, g.pending)
		g.pending = g.pending[n:]
	case g.err != nil:
		return 0, g.err
	default:
		n, err = g.r.Read(p)
		if err != nil && !errors.Is(err, io.EOF) {
			err = ioError{err}
		}
	}
	for i := 0; i < n; i++ {
		if !g.header {
			// Fast path outside headers: jump to the end of the line.
			k := bytes.IndexByte(p[i:n], '\n')
			seg := k
			if k < 0 {
				seg = n - i
			}
			if g.line+seg < maxLineBytes {
				for j := 0; j < seg && g.line+j < 2; j++ {
					if p[i+j] == '-' && g.dash == g.line+j {
						g.dash++
					}
				}
				if k < 0 {
					g.line += seg
					break
				}
				if g.dash == 2 {
					g.header, g.hbytes, g.hlines = true, 0, 0
				}
				g.line, g.dash, g.cr = 0, 0, false
				i += k
				continue
			}
		}
		b := p[i]
		if g.header && g.line == 0 && g.hlines > 0 && !g.cr && b != '\n' && b != '\r' && b != ' ' && b != '\t' &&
			g.dash == 0 && notField(p[i:n]) {
			// A line in a header block that is neither a field nor
			// indented: a folded line whose indentation was lost, as
			// in `boundary="..."` under a Content-Type. Indent it so
			// that the header reader takes it as a continuation and
			// does not give up on the whole part.
			rest := make([]byte, 0, 1+n-i+len(g.pending))
			if i > 0 {
				rest = append(rest, ' ')
			}
			rest = append(append(rest, p[i:n]...), g.pending...)
			g.pending = rest
			if err != nil {
				g.err = err
			}
			if i > 0 {
				return i, nil
			}
			p[0] = ' '
			g.line = 1
			return 1, nil
		}
		if g.header && b != '\r' && b != '\n' && !g.cr {
			// Fast path in headers: the rest of the line at once when it
			// stays within both limits. A CR before the LF is no part
			// of the line, as below.
			k := bytes.IndexByte(p[i:n], '\n')
			seg := k
			if k < 0 {
				seg = n - i
			}
			if g.line+seg < maxLineBytes-1 && g.hbytes+seg < maxHeaderBytes-1 {
				for j := 0; j < seg && g.line+j < 2; j++ {
					if p[i+j] == '-' && g.dash == g.line+j {
						g.dash++
					}
				}
				body := seg
				cr := p[i+seg-1] == '\r'
				if cr {
					body--
				}
				g.line += body
				g.hbytes += body
				if k < 0 {
					g.cr = cr
					break
				}
				g.hlines++
				if g.dash == 2 {
					g.header, g.hbytes, g.hlines = true, 0, 0
				}
				g.line, g.dash, g.cr = 0, 0, false
				i += k
				continue
			}
		}
		if b == '\n' {
			if g.header {
				g.hlines++
			}
			if g.header && g.line == 0 {
				g.header = false
			} else if g.dash == 2 {
				g.header, g.hbytes, g.hlines = true, 0, 0
			}
			g.line, g.dash, g.cr = 0, 0, false
			continue
		}
		if b == '\r' && !g.cr {
			g.cr = true
			continue
		}
		if g.cr {
			g.cr = false
			g.line++
		}
		if g.line < 2 && b == '-' && g.dash == g.line {
			g.dash++
		}
		g.line++
		if g.header {
			g.hbytes++
		}
		if g.line >= maxLineBytes || (g.header && g.hbytes >= maxHeaderBytes) {
			// Insert a line break (ending the header with a blank line)
			// after this byte; the rest of this read comes next time.
			ins := "\n"
			if g.header && g.hbytes >= maxHeaderBytes {
				ins = "\n\n"
			}
			rest := make([]byte, 0, len(ins)+n-i-1+len(g.pending))
			rest = append(append(append(rest, ins...), p[i+1:n]...), g.pending...)
			g.pending = rest
			if err != nil {
				g.err = err
			}
			g.line, g.dash, g.cr = 0, 0, false
			return i + 1, nil
		}
	}
	if err != nil && len(g.pending) > 0 {
		g.err, err = err, nil
	}
	return n, err
}

// notField reports whether the line at the start of b, which must be
// complete in b, is no header field: it has no colon, or white space before
// its first colon. A line not complete in b counts as a field.
func notField(b []byte) bool {
	k := bytes.IndexByte(b, '\n')
	if k < 0 {
		return false
	}
	l := b[:k]
	c := bytes.IndexByte(l, ':')
	return c <= 0 || bytes.ContainsAny(l[:c], " \t")
}

// checkBoundary returns the boundary the body in br really uses: the one the
// header names when a delimiter line with it comes in the first buffer,
// otherwise the first line there that looks like a delimiter; found is
// false when there is none. Anonymised
// and hand-edited bounces do not always keep the two in step.
func checkBoundary(br *bufio.Reader, boundary string) (string, bool) {
	b, _ := br.Peek(br.Size())
	if len(b) == 0 || bytes.Contains(b, []byte("--"+boundary)) {
		return boundary, true
	}
	for len(b) > 0 {
		line := b
		if k := bytes.IndexByte(b, '\n'); k >= 0 {
			line, b = b[:k], b[k+1:]
		} else {
			b = nil
		}
		line = bytes.TrimRight(line, " \t\r")
		if len(line) > 2+8 && line[0] == '-' && line[1] == '-' && line[2] != '-' && !bytes.ContainsAny(line, " \t") {
			return string(line[2:]), true
		}
	}
	return boundary, false
}

// topFields are the header fields of a report that Parse looks at; the
// others are skipped unread.
var topFields = map[string]bool{
	"Content-Type": true, "Content-Transfer-Encoding": true, "From": true, "To": true, "Subject": true,
	"Return-Path": true, "Auto-Submitted": true, "Precedence": true, "X-Apple-Unsubscribe": true,
	"X-Auto-Response-Suppress": true, "X-Autoreply": true, "X-Autorespond": true, "X-Failed-Recipients": true,
	"X-Original-To": true, "Delivered-To": true, "Envelope-To": true, "X-Mlserver": true,
}

// readTopHeader reads the header of the message (RFC 5322 section 2.2) up to
// the blank line and keeps the fields of topFields. When a line that is no
// field ends the header early, rest is what followed it in the header block,
// which belongs to the body. The guard bounds the header block.
func readTopHeader(br *bufio.Reader) (h textproto.Header, rest string, err error) {
	bp := bufferPool.Get().(*bytes.Buffer)
	bp.Reset()
	defer func() {
		if bp.Cap() <= maxPooledBuffer {
			bufferPool.Put(bp)
		}
	}()
	for {
		line, rerr := br.ReadSlice('\n')
		bp.Write(line)
		if errors.Is(rerr, bufio.ErrBufferFull) {
			continue
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) && isIOError(rerr) {
				return h, "", rerr
			}
			break
		}
		if len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			break
		}
	}
	raw := bp.String()
	fields, n := scanFields(raw, false, topFields)
	for _, f := range fields {
		h.Add(f.Name, f.Value)
	}
	if n < len(raw) {
		rest = raw[n:]
	}
	return h, rest, nil
}

// needsDecoding reports whether a part's content needs more than reading as
// it is: a transfer encoding other than the identity ones (RFC 2045 section
// 6), or a charset other than US-ASCII and UTF-8, which the bytes already
// are (other 8-bit text is read as Latin-1 later).
func needsDecoding(h textproto.Header) bool {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "", "7bit", "8bit", "binary":
	default:
		return true
	}
	ct := h.Get("Content-Type")
	i := strings.Index(strings.ToLower(ct), "charset")
	if i < 0 {
		return false
	}
	_, params := mediaType(h)
	switch strings.ToLower(params["charset"]) {
	case "", "us-ascii", "utf-8", "utf8", "ascii":
		return false
	}
	return true
}
