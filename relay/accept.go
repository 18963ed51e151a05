package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"strings"

	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/answer-relay/answer-relay/outbox"
)

// maxHeaderBytes bounds the header section, the only part of a message the
// relay holds in memory; the body is streamed into the store.
const maxHeaderBytes = 512 << 10

var errHeaderTooLarge = errors.New("relay: header section too large")

// Data accepts one message: it reads the header section, tags the message,
// streams it into the store and replies 250 only once the store has it
// (SPEC section 1, step 1). Any failure of the store is 451 and keeps
// nothing.
func (s *session) Data(r io.Reader) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.r.panicked("smtp", p)
			err = errInternal
		}
	}()
	if !s.authorized() {
		return errAuthRequired
	}
	now := s.r.clock()
	id := outbox.NewID(now)
	log := s.log.With("answer_id", id)

	in := &readErr{r: r}
	br := bufio.NewReaderSize(in, 32<<10)
	raw, err := readHeaderSection(br)
	if err != nil {
		return s.dataFailed(log, in, err)
	}
	hdr, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		s.r.metrics.Rejected.WithLabelValues("bad_message").Inc()
		log.Info("smtp message refused: malformed header", "err", err)
		return errBadHeader
	}

	a, err := outbox.NewAnswer(id, s.from, s.rcpts, now)
	if err != nil {
		return errBadAddress
	}
	cfg := &s.r.cfg.SMTP
	var added strings.Builder
	fmt.Fprintf(&added, "%s: %s\r\n", cfg.TagHeader, id)
	a.Headers = append(a.Headers, outbox.Header{Name: cfg.TagHeader, Value: id})
	msgID := messageID(hdr.Get("Message-Id"))
	if msgID == "" {
		// RFC 6409 section 8.3: a submission server may add a missing
		// Message-ID. An existing one is never rewritten.
		msgID = id + "@" + s.r.hostname
		fmt.Fprintf(&added, "Message-ID: <%s>\r\n", msgID)
		a.Headers = append(a.Headers, outbox.Header{Name: "Message-ID", Value: "<" + msgID + ">"})
	}
	a.MessageID = msgID
	a.Subject = decodeHeader(hdr.Get("Subject"))
	a.Submitter = s.submitter()
	a.SetReferences(s.r.references(&hdr, a.Subject))
	for f := hdr.Fields(); f.Next(); {
		if credentialHeader(f.Key()) {
			continue
		}
		a.Headers = append(a.Headers, outbox.Header{Name: f.Key(), Value: f.Value()})
	}

	// The store counts the bytes into a.Size (outbox/storetest checks it).
	body := io.MultiReader(strings.NewReader(added.String()), bytes.NewReader(raw), br)
	ctx, cancel := context.WithTimeout(s.ctx, cfg.CommandTimeout)
	defer cancel()
	if err := s.r.store.Accept(ctx, a, body); err != nil {
		if in.err != nil {
			return s.dataFailed(log, in, in.err)
		}
		s.r.metrics.StoreErrors.WithLabelValues("accept").Inc()
		s.r.metrics.Rejected.WithLabelValues("store").Inc()
		log.Error("smtp message not stored, replied 451", "err", err)
		return errTryLater
	}
	s.r.metrics.Accepted.Inc()
	s.r.wake()
	log.Info("smtp message accepted", "from", a.Sender, "recipients", len(a.Recipients),
		"size", a.Size, "ticket_id", a.TicketID, "answer_ref", a.AnswerRef, "submitter", a.Submitter)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + id}
}

// dataFailed turns a failure to read the client's data into a reply.
func (s *session) dataFailed(log *slog.Logger, in *readErr, err error) error {
	var se *smtp.SMTPError
	switch {
	case errors.Is(err, errHeaderTooLarge), errors.As(in.err, &se) && se.Code == 552:
		s.r.metrics.Rejected.WithLabelValues("too_large").Inc()
		log.Info("smtp message refused: too large", "err", err)
		return errTooLarge
	case errors.Is(err, smtp.ErrTooLongLine) || errors.Is(in.err, smtp.ErrTooLongLine):
		s.r.metrics.Rejected.WithLabelValues("bad_message").Inc()
		log.Info("smtp message refused: line too long")
		return errLineTooLong
	}
	log.Info("smtp message not received", "err", err)
	return errTryLater
}

// readHeaderSection reads up to and including the empty line that ends the
// header section (RFC 5322 section 2.1), or the whole message if it has no
// body.
func readHeaderSection(br *bufio.Reader) ([]byte, error) {
	var raw []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			err = nil
		}
		raw = append(raw, line...)
		if len(raw) > maxHeaderBytes {
			return nil, errHeaderTooLarge
		}
		if err == io.EOF {
			return raw, nil
		}
		if err != nil {
			return nil, err
		}
		if len(line) > 0 && line[len(line)-1] == '\n' && (len(bytes.TrimRight(line, "\r\n")) == 0) {
			return raw, nil
		}
	}
}

// messageID returns a Message-ID header's value without angle brackets.
func messageID(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j]
		}
	}
	return v
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// decodeHeader decodes RFC 2047 encoded words; a value it cannot decode is
// kept as it is.
func decodeHeader(v string) string {
	if d, err := wordDecoder.DecodeHeader(v); err == nil {
		return d
	}
	return v
}

// references reads the helpdesk's ticket and answer references from the
// configured headers, then from the Subject pattern.
func (r *Relay) references(h *textproto.Header, subject string) (ticket, answer string) {
	ticket = strings.TrimSpace(h.Get(r.cfg.SMTP.TicketHeader))
	answer = strings.TrimSpace(h.Get(r.cfg.SMTP.AnswerHeader))
	if r.subject != nil && (ticket == "" || answer == "") {
		if m := r.subject.FindStringSubmatch(subject); m != nil {
			t, a := m[1], ""
			if i := r.subject.SubexpIndex("ticket"); i > 0 {
				t = m[i]
			}
			if i := r.subject.SubexpIndex("answer"); i > 0 {
				a = m[i]
			}
			if ticket == "" {
				ticket = t
			}
			if answer == "" {
				answer = a
			}
		}
	}
	return ticket, answer
}

// credentialHeader reports whether a header may carry a credential and so
// must not be kept in the answer's details (the message itself is
// forwarded unchanged).
func credentialHeader(name string) bool {
	n := strings.ToLower(name)
	if n == "authorization" || n == "proxy-authorization" {
		return true
	}
	for _, w := range []string{"password", "passwd", "secret", "token", "api-key", "apikey", "credential"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// readErr remembers the first error reading the client's data, so a failed
// Accept can tell a client's fault (too large, gone) from the store's.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}
