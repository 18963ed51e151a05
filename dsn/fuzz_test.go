package dsn

import (
	"bytes"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks properties of Parse on any input: it does not panic, it
// is deterministic, and every address it reports is written in the input
// (raw, or once quoted-printable or encoded words are decoded).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*.eml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("From: MAILER-DAEMON@x\r\n\r\n<a@b.c>: 550 5.1.1 user unknown\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r1, err1 := Parse(bytes.NewReader(data))
		r2, err2 := Parse(bytes.NewReader(data))
		if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(r1, r2) {
			t.Fatalf("not deterministic: %v / %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		var low string
		for _, rc := range r1.Recipients {
			if rc.Address == "" {
				continue
			}
			if low == "" {
				low = strings.ToLower(string(data)) + "\n" + strings.ToLower(decodedForms(data))
			}
			if !strings.Contains(low, strings.ToLower(rc.Address)) {
				t.Fatalf("address %q is not in the input", rc.Address)
			}
		}
	})
}

// decodedForms returns the input as the parser saw it after decoding:
// quoted-printable undone, encoded words decoded, and every part it kept.
func decodedForms(data []byte) string {
	var b strings.Builder
	if qp, err := readAllQP(data); err == nil {
		b.Write(qp)
	}
	b.WriteString(decodeWords(string(data)))
	if _, c, err := parse(bytes.NewReader(data)); err == nil {
		for _, t := range c.texts {
			b.WriteString(t.text)
			if t.mediaType == "text/html" {
				// HTML is read as the text it shows (joinTexts).
				b.WriteString("\n")
				b.WriteString(stripHTML(t.text))
			}
		}
		b.WriteString(strings.Join(c.status, "\n"))
		b.WriteString(c.feedback)
		b.WriteString(c.returned)
		b.WriteString(decodeWords(c.returned))
		for _, v := range c.top.Values("X-Failed-Recipients") {
			b.WriteString(v)
		}
		b.WriteString(decodeWords(c.top.Get("From")))
	}
	return b.String()
}

func readAllQP(data []byte) ([]byte, error) {
	var out bytes.Buffer
	_, err := out.ReadFrom(quotedprintable.NewReader(bytes.NewReader(data)))
	return out.Bytes(), err
}
