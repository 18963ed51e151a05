package dsn

import "strings"

// A phrase table is consulted many times for the same diagnostic: once per
// reason probed, for vendor wordings, for services' wordings. Instead of
// searching the text for each phrase, the text is scanned once for every
// piece of every phrase (an index on the first three bytes of the pieces),
// and the phrases are then answered from the set of pieces found.

// pieceIndex is the index of all phrase pieces.
type pieceIndex struct {
	pieces []string
	id     map[string]int32
	// offs and ids list, for the bucket k of a piece's first three
	// bytes, the pieces ids[offs[k]:offs[k+1]].
	offs  []int32
	ids   []int32
	short []int32 // pieces of one or two bytes, searched for directly
}

// compiled is a phrase reduced to the ids of its pieces.
type compiled struct {
	text   string // as written, with '*' between pieces
	pieces []int32
}

var (
	index            pieceIndex
	compiledPhrases  map[string][]compiled // by reason
	compiledVendor   []compiled            // in the order of vendorPhrases
	compiledService  []compiled            // in the order of servicePhrases
	rejectedIsNot    []int32
	compiledCommands []int32 // in the order of commandPhrases
)

func init() {
	index.id = map[string]int32{}
	compiledPhrases = map[string][]compiled{}
	for reason, ps := range phrases {
		for _, p := range ps {
			compiledPhrases[reason] = append(compiledPhrases[reason], index.compile(p))
		}
	}
	for _, v := range vendorPhrases {
		compiledVendor = append(compiledVendor, index.compile(v.phrase))
	}
	for _, s := range servicePhrases {
		compiledService = append(compiledService, compiled{text: s.phrase, pieces: []int32{index.add(s.phrase)}})
	}
	for _, c := range commandPhrases {
		compiledCommands = append(compiledCommands, index.add(c.phrase))
	}
	for _, p := range rejectedNot {
		rejectedIsNot = append(rejectedIsNot, index.add(p))
	}
	index.build()
	if len(index.pieces) > maxPieces {
		panic("dsn: more phrase pieces than maxPieces")
	}
}

// compile registers the pieces of phrase p.
func (x *pieceIndex) compile(p string) compiled {
	c := compiled{text: p}
	for _, piece := range strings.Split(p, "*") {
		c.pieces = append(c.pieces, x.add(piece))
	}
	return c
}

// add registers one piece and returns its id.
func (x *pieceIndex) add(piece string) int32 {
	if id, ok := x.id[piece]; ok {
		return id
	}
	id := int32(len(x.pieces))
	x.pieces = append(x.pieces, piece)
	x.id[piece] = id
	return id
}

// build makes the index: pieces of three bytes or more under a hash of
// their first three bytes; shorter ones apart.
func (x *pieceIndex) build() {
	count := make([]int32, indexKeys+1)
	for _, p := range x.pieces {
		if len(p) >= 3 {
			count[key3(p[0], p[1], p[2])+1]++
		}
	}
	for k := 1; k <= indexKeys; k++ {
		count[k] += count[k-1]
	}
	x.offs = count
	x.ids = make([]int32, count[indexKeys])
	fill := make([]int32, indexKeys)
	copy(fill, count[:indexKeys])
	for id, p := range x.pieces {
		switch {
		case len(p) >= 3:
			k := key3(p[0], p[1], p[2])
			x.ids[fill[k]] = int32(id)
			fill[k]++
		case p != "":
			x.short = append(x.short, int32(id))
		}
	}
}

// indexKeys is the number of hash buckets of the piece index.
const indexKeys = 1 << 14

// key3 hashes three bytes to a bucket.
func key3(a, b, c byte) int {
	return int((uint32(a)<<16 | uint32(b)<<8 | uint32(c)) * 2654435761 >> (32 - 14))
}

// match is what the index found in one lower-case text.
type match struct {
	d    string
	bits [maxPieces / 64]uint64
	any  bool // some piece was found
}

// maxPieces bounds the number of distinct phrase pieces; init checks it.
const maxPieces = 1024

// newMatch scans the lower-case text d once for all pieces.
func newMatch(d string) *match {
	m := &match{d: d}
	for i := 0; i+2 < len(d); i++ {
		k := key3(d[i], d[i+1], d[i+2])
		for _, id := range index.ids[index.offs[k]:index.offs[k+1]] {
			if m.bits[id>>6]&(1<<(id&63)) == 0 && strings.HasPrefix(d[i:], index.pieces[id]) {
				m.bits[id>>6] |= 1 << (id & 63)
				m.any = true
			}
		}
	}
	for _, id := range index.short {
		// Every phrase with a short piece has a longer one too: any
		// stays as the long pieces left it.
		if m.any && strings.Contains(d, index.pieces[id]) {
			m.bits[id>>6] |= 1 << (id & 63)
		}
	}
	return m
}

// found reports whether piece id occurs in the text.
func (m *match) found(id int32) bool { return m.bits[id>>6]&(1<<(id&63)) != 0 }

// phrase reports whether the text has phrase c, its pieces in order.
func (m *match) phrase(c compiled) bool {
	for _, id := range c.pieces {
		if !m.found(id) {
			return false
		}
	}
	return len(c.pieces) == 1 || matchPhrase(m.d, c.text)
}

// has reports whether the text has a phrase of reason.
func (m *match) has(reason string) bool {
	if !m.any {
		return false
	}
	if reason == ReasonRejected {
		// Texts about the recipient or the client's address use the same
		// words as texts about the sender.
		for _, id := range rejectedIsNot {
			if m.found(id) {
				return false
			}
		}
	}
	for _, c := range compiledPhrases[reason] {
		if m.phrase(c) {
			return true
		}
	}
	return false
}

// vendor returns the reason a vendor wording in the text names, or "".
func (m *match) vendor() string {
	if !m.any {
		return ""
	}
	for i, c := range compiledVendor {
		if m.phrase(c) {
			return vendorPhrases[i].reason
		}
	}
	return ""
}

// namesReason reports whether the text has a wording that names some
// reason.
func (m *match) namesReason() bool {
	if !m.any {
		return false
	}
	if m.vendor() != "" {
		return true
	}
	for _, cs := range compiledPhrases {
		for _, c := range cs {
			if m.phrase(c) {
				return true
			}
		}
	}
	return false
}
