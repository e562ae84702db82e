package tokenizer

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// maxVocab bounds vocabulary sizes so that a corrupt id cannot make build
// allocate gigabytes.
const maxVocab = 1 << 24

// build turns a spec into a ready Tokenizer.
func build(sp *spec) (*Tokenizer, error) {
	if len(sp.vocab) == 0 {
		return nil, errors.New("empty vocabulary")
	}
	size := len(sp.vocab)
	for _, a := range sp.added {
		if a.id >= maxVocab {
			return nil, fmt.Errorf("added token %q: id %d too large", a.content, a.id)
		}
		size = max(size, a.id+1)
	}
	if size > maxVocab {
		return nil, fmt.Errorf("vocabulary of %d ids is too large", size)
	}
	modelTok := sp.vocabMap // token -> id of the model vocabulary; becomes t.ids
	if modelTok == nil {
		modelTok = make(map[string]int, len(sp.vocab))
		for id, tok := range sp.vocab {
			if tok != "" {
				modelTok[tok] = id
			}
		}
	}
	t := &Tokenizer{
		byteLevel:    sp.byteLevel,
		kind:         KindSentencePiece,
		vocab:        make([]string, size),
		modelVocab:   sp.vocab,
		ids:          modelTok,
		tokenTypes:   make([]TokenType, size),
		ignoreMerges: sp.ignoreMerges,
		byteFallback: sp.byteFallback,
		fuseUnk:      sp.fuseUnk,
		unk:          -1,
		special:      map[int]bool{},
		normalizers:  sp.normalizers,
		pretoks:      sp.pretoks,
		decoders:     sp.decoders,
		bos:          -1,
		pattern:      sp.pattern,
	}
	if t.byteLevel {
		t.kind = KindByteLevel
	}
	copy(t.vocab, sp.vocab)
	for id, tok := range sp.vocab {
		if tok == "" {
			t.tokenTypes[id] = TokenUnused
		} else {
			t.tokenTypes[id] = TokenNormal
		}
	}
	for i := range t.byteToken {
		t.byteToken[i] = -1
		key := fmt.Sprintf("<0x%02X>", i)
		if t.byteLevel {
			key = byteLevelEncode(string([]byte{byte(i)}))
		}
		if id, ok := modelTok[key]; ok {
			t.byteToken[i] = id
			if !t.byteLevel && sp.byteFallback {
				t.tokenTypes[id] = TokenByte
			}
		}
	}
	if sp.hasUnk {
		if id, ok := modelTok[sp.unk]; ok {
			t.unk = id
		}
	}

	mergeIDs, err := resolveMerges(sp.merges, modelTok)
	if err != nil {
		return nil, err
	}
	t.merges = make(map[uint64]mergeResult, len(mergeIDs))
	t.mergeList = make([][2]int32, len(mergeIDs))
	for rank, m := range mergeIDs {
		t.merges[pairKey(m[0], m[1])] = mergeResult{int32(rank), m[2]}
		t.mergeList[rank] = [2]int32{m[0], m[1]}
	}

	var rawPats, normPats []addedPattern
	t.added = make([]addedToken, len(sp.added))
	copy(t.added, sp.added)
	for i := range t.added {
		a := &t.added[i]
		t.vocab[a.id] = a.content
		if old, ok := t.ids[a.content]; ok && old != a.id && old < len(sp.vocab) && sp.vocab[old] == a.content {
			if t.shadowed == nil {
				t.shadowed = map[string]int{}
			}
			t.shadowed[a.content] = old // still the model's token for BPE lookups
		}
		t.ids[a.content] = a.id
		if a.special {
			t.special[a.id] = true
			t.tokenTypes[a.id] = TokenControl
		} else {
			t.tokenTypes[a.id] = TokenUserDefined
		}
		if a.normed && len(t.normalizers) > 0 {
			s := a.content
			for _, n := range t.normalizers {
				s = n.apply(s)
			}
			normPats = append(normPats, addedPattern{s, a})
		} else {
			rawPats = append(rawPats, addedPattern{a.content, a})
		}
	}
	if t.unk >= 0 {
		t.tokenTypes[t.unk] = TokenUnknown // also when <unk> is an added special token
	}
	t.addedRaw = newAddedMatcher(rawPats)
	t.addedNorm = newAddedMatcher(normPats)

	lookup := func(what, name string) (int, error) {
		id, ok := t.ids[name]
		if !ok {
			return -1, fmt.Errorf("%s %q is not in the vocabulary", what, name)
		}
		return id, nil
	}
	switch {
	case sp.bosName != "":
		if t.bos, err = lookup("bos_token", sp.bosName); err != nil {
			return nil, err
		}
	case sp.template != nil && len(sp.template.prefix) > 0:
		t.bos = sp.template.prefix[0]
	}
	if sp.eosName != "" {
		id, err := lookup("eos_token", sp.eosName)
		if err != nil {
			return nil, err
		}
		t.eos = append(t.eos, id)
	}
	for _, id := range sp.extraEOS {
		if id < 0 || id >= size {
			return nil, fmt.Errorf("eos id %d out of range [0, %d)", id, size)
		}
		dup := false
		for _, e := range t.eos {
			dup = dup || e == id
		}
		if !dup {
			t.eos = append(t.eos, id)
		}
	}

	switch {
	case sp.addBOS != nil || sp.addEOS != nil:
		// LlamaTokenizerFast rebuilds its post-processor from these flags
		// (add_bos_token defaults to true, add_eos_token to false).
		t.addBOSDefault = sp.addBOS == nil || *sp.addBOS
		t.addEOSDefault = sp.addEOS != nil && *sp.addEOS
		if t.addBOSDefault && t.bos >= 0 {
			t.prefix = []int{t.bos}
		}
		if t.addEOSDefault && len(t.eos) > 0 {
			t.suffix = []int{t.eos[0]}
		}
	case sp.template != nil:
		t.prefix, t.suffix = sp.template.prefix, sp.template.suffix
		t.addBOSDefault = len(t.prefix) > 0 && t.prefix[0] == t.bos
		t.addEOSDefault = len(t.suffix) > 0 && len(t.eos) > 0 && t.suffix[len(t.suffix)-1] == t.eos[0]
	}
	for _, id := range append(append([]int(nil), t.prefix...), t.suffix...) {
		if id < 0 || id >= size {
			return nil, fmt.Errorf("post-processor id %d out of range [0, %d)", id, size)
		}
	}
	return t, nil
}

// resolveMerges maps each merge to (left id, right id, merged id). The
// ~840k lookups for Llama 3 are spread over the available cores.
func resolveMerges(merges [][2]string, vocab map[string]int) ([][3]int32, error) {
	out := make([][3]int32, len(merges))
	workers := min(runtime.GOMAXPROCS(0), 8, 1+len(merges)/16384)
	chunk := (len(merges) + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*chunk, min((w+1)*chunk, len(merges))
		wg.Go(func() {
			var buf []byte
			for rank := lo; rank < hi; rank++ {
				m := merges[rank]
				a, okA := vocab[m[0]]
				b, okB := vocab[m[1]]
				buf = append(append(buf[:0], m[0]...), m[1]...)
				id, okM := vocab[string(buf)]
				if !okA || !okB {
					errs[w] = fmt.Errorf("merge %d %q: token not in the vocabulary", rank, m[0]+" "+m[1])
					return
				}
				if !okM {
					errs[w] = fmt.Errorf("merge %d %q: merged token %q not in the vocabulary", rank, m[0]+" "+m[1], m[0]+m[1])
					return
				}
				out[rank] = [3]int32{int32(a), int32(b), int32(id)}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the lowest-ranked bad merge
		}
	}
	return out, nil
}
