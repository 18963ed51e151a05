package dsn

import (
	"strings"
	"unicode/utf8"
)

// isUTF8 reports whether s is valid UTF-8.
func isUTF8(s string) bool { return utf8.ValidString(s) }

// latin1 reads s as ISO-8859-1, the most harmless guess for undeclared
// 8-bit text.
func latin1(s string) string {
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	for i := 0; i < len(s); i++ {
		if s[i] < 0x80 {
			b.WriteByte(s[i])
		} else {
			b.WriteRune(rune(s[i]))
		}
	}
	return b.String()
}

// stripHTML turns HTML into plain text lines: tags become line breaks or
// nothing, a few entities are decoded.
func stripHTML(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	lower := asciiLower(s)
	for i := 0; i < len(s); {
		c := s[i]
		if c == '<' {
			j := strings.IndexByte(s[i:], '>')
			if j < 0 {
				break
			}
			tag := lower[i+1 : i+j]
			if strings.HasPrefix(tag, "br") || strings.HasPrefix(tag, "p") || strings.HasPrefix(tag, "/p") ||
				strings.HasPrefix(tag, "div") || strings.HasPrefix(tag, "/div") || strings.HasPrefix(tag, "tr") ||
				strings.HasPrefix(tag, "/tr") || strings.HasPrefix(tag, "li") || strings.HasPrefix(tag, "/h") {
				b.WriteByte('\n')
			} else if strings.HasPrefix(tag, "td") || strings.HasPrefix(tag, "/td") {
				b.WriteByte(' ')
			}
			if strings.HasPrefix(tag, "style") || strings.HasPrefix(tag, "script") || strings.HasPrefix(tag, "head") {
				end := "</" + strings.Fields(tag + " x")[0] + ">"
				k := strings.Index(lower[i:], end)
				if k > 0 {
					i += k + len(end)
					continue
				}
			}
			i += j + 1
			continue
		}
		if c == '&' {
			if j := strings.IndexByte(s[i:min(len(s), i+10)], ';'); j > 0 {
				if r, ok := entities[s[i+1:i+j]]; ok {
					b.WriteString(r)
					i += j + 1
					continue
				}
			}
		}
		b.WriteByte(c)
		i++
	}
	return b.String()
}

var entities = map[string]string{
	"lt": "<", "gt": ">", "amp": "&", "quot": `"`, "nbsp": " ", "#39": "'", "apos": "'",
}

// isLocalChar reports whether c may appear in the local part of an address
// as bounces write them.
func isLocalChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte(".!#$%&'*+/=?^_`{|}~-", c) >= 0
}

// isDomainChar reports whether c may appear in a domain name.
func isDomainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

// addrSpan is one address found in a text, with its byte offsets.
type addrSpan struct {
	addr       string
	start, end int
}

// findAddrs returns the addresses written in s, in order.
func findAddrs(s string) []addrSpan {
	var out []addrSpan
	from := 0
	for {
		k := strings.IndexByte(s[from:], '@')
		if k < 0 {
			return out
		}
		at := from + k
		i := at
		for i > 0 && isLocalChar(s[i-1]) {
			i--
		}
		j := at + 1
		for j < len(s) && isDomainChar(s[j]) {
			j++
		}
		// Trim dots and quotes that end sentences or open local parts.
		for i < at && (s[i] == '.' || s[i] == '\'' || s[i] == '`') {
			i++
		}
		for j > at+1 && (s[j-1] == '.' || s[j-1] == '-') {
			j--
		}
		local, domain := s[i:at], s[at+1:j]
		if local != "" && strings.IndexByte(domain, '.') > 0 && domain[0] != '.' {
			out = append(out, addrSpan{addr: s[i:j], start: i, end: j})
		}
		from = j
		if from <= at {
			from = at + 1
		}
	}
}

// firstAddr returns the first address in s, or "".
func firstAddr(s string) string {
	if a := findAddrs(s); len(a) > 0 {
		return a[0].addr
	}
	return ""
}

// squeeze collapses runs of white space to one space and trims s.
func squeeze(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c >= 0x80 ||
			c == ' ' && (i == 0 || i == len(s)-1 || s[i+1] == ' ') {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, f := range strings.Fields(s) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f)
	}
	return b.String()
}

// findStatus returns the first enhanced status code (RFC 3463) in s.
func findStatus(s string) string {
	for i := 0; i+4 < len(s); i++ {
		c := s[i]
		if (c != '2' && c != '4' && c != '5') || s[i+1] != '.' {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || s[i-1] == '.') {
			continue
		}
		j := i + 2
		k := j
		for k < len(s) && isDigit(s[k]) && k-j < 3 {
			k++
		}
		if k == j || k >= len(s) || s[k] != '.' || (k < len(s)-1 && !isDigit(s[k+1])) {
			continue
		}
		m := k + 1
		n := m
		for n < len(s) && isDigit(s[n]) && n-m < 3 {
			n++
		}
		if n == m || (n < len(s) && (isDigit(s[n]) || s[n] == '.' && n+1 < len(s) && isDigit(s[n+1]))) {
			continue
		}
		return s[i:n]
	}
	return ""
}

// findReplyCode returns the first SMTP reply code (RFC 5321 section 4.2) in
// s: three digits 2xx, 4xx or 5xx standing alone before a space, a hyphen or
// the end.
func findReplyCode(s string) string {
	for i := 0; i+2 < len(s); i++ {
		c := s[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && !(s[i-1] == ' ' || s[i-1] == ':' || s[i-1] == ';' || s[i-1] == '(' || s[i-1] == '[' ||
			s[i-1] == '\n' || s[i-1] == '\t' || s[i-1] == '"' || s[i-1] == '<' || s[i-1] == '=') {
			continue
		}
		if !isDigit(s[i+1]) || !isDigit(s[i+2]) || s[i+1] > '5' {
			continue
		}
		if i+3 < len(s) && !(s[i+3] == ' ' || s[i+3] == '-' || s[i+3] == '\n' || s[i+3] == '\t' ||
			s[i+3] == ')' || s[i+3] == ']' || s[i+3] == ',' || s[i+3] == '"') {
			continue
		}
		if i+4 < len(s) && s[i+3] == '-' && !(s[i+4] == ' ' || isDigit(s[i+4]) || s[i+4] >= 'A' || s[i+4] == '\'') {
			continue
		}
		return s[i : i+3]
	}
	return ""
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// lines splits s into lines without their line breaks.
func lines(s string) []string { return strings.Split(s, "\n") }

// asciiLower lower-cases the ASCII letters of s, keeping every byte offset.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// replyStatus returns the first enhanced status code in s that directly
// follows an SMTP reply code ("550 5.7.1", "550-'5.7.1"): the remote
// server's own code, which a relay's summary code before it ("5.1.0 -
// Unknown address error 550-'5.7.1 ...") only paraphrases.
func replyStatus(s string) string {
	for i := 0; i+8 < len(s); i++ {
		c := s[i]
		if (c != '4' && c != '5') || !isDigit(s[i+1]) || !isDigit(s[i+2]) || (i > 0 && isDigit(s[i-1])) {
			continue
		}
		j := i + 3
		if s[j] != ' ' && s[j] != '-' {
			continue
		}
		j++
		if j < len(s) && (s[j] == '\'' || s[j] == '"') {
			j++
		}
		if j < len(s) && s[j] == c {
			if st := findStatus(s[j:]); st != "" && strings.HasPrefix(s[j:], st) {
				return st
			}
		}
	}
	return ""
}

// joinReply removes from a multi-line SMTP reply written on one line the
// codes that start its continuation lines ("550-5.2.1 The user ... 550-5.2.1
// prevents ... 550 5.2.1 https://..."), so that the text reads as one
// sentence; the first code stays.
func joinReply(d string) string {
	c := findReplyCode(d)
	if c == "" {
		return d
	}
	first := strings.Index(d, c)
	if first < 0 || !strings.Contains(d[first+3:], " "+c) {
		return d
	}
	var b strings.Builder
	b.WriteString(d[:first+3])
	rest := d[first+3:]
	for {
		i := strings.Index(rest, " "+c)
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		j := i + 4
		if i > 0 && j < len(rest) && (rest[j] == '-' || rest[j] == ' ') {
			k := j + 1
			if st := findStatus(rest[k:]); st != "" && strings.HasPrefix(rest[k:], st) {
				k += len(st)
			}
			if k < len(rest) && rest[k] == ' ' {
				rest = rest[k:]
				continue
			}
			if k == len(rest) {
				rest = ""
				continue
			}
		}
		b.WriteString(rest[i:j])
		rest = rest[j:]
	}
	return b.String()
}
