//go:build cuda

package cuda

import (
	"errors"
	"fmt"

	"gorgonia.org/cu"
)

// CopyPrefix makes c hold the first n positions of src (a shared prompt
// prefix; n is cut to src.Len), discarding what c held, as
// infer.KVCache.CopyPrefix. c is allocated, or grown to n positions, as
// needed; the copies (one per layer for keys and one for values) are queued
// on the device's stream, so the next step sees them without a host wait.
func (c *Cache) CopyPrefix(src *Cache, n int) error {
	if src == nil || src.g != c.g {
		return errors.New("cuda: copy prefix: the source cache belongs to another model")
	}
	n = min(n, src.Len)
	if src == c {
		c.Truncate(n)
		return nil
	}
	g := c.g
	defer g.d.bind()()
	c.Len = 0 // nothing of c is kept: alloc must not copy it over
	if n <= 0 {
		return nil
	}
	if src.ptr == 0 {
		return errors.New("cuda: copy prefix: the source cache was freed")
	}
	if c.ptr == 0 || c.Cap < n {
		if err := c.alloc(max(n, c.Cap)); err != nil {
			return err
		}
	}
	// A copy through the legacy stream (e.g. src grown by alloc) must land
	// before the stream reads src.
	if err := g.d.fence(); err != nil {
		return err
	}
	kd := g.kvDim() * 4
	for l := 0; l < 2*g.Layers; l++ {
		from := src.ptr + cu.DevicePtr(int64(l)*int64(src.Cap)*kd)
		to := c.ptr + cu.DevicePtr(int64(l)*int64(c.Cap)*kd)
		if err := g.d.st.copyDtoD(to, from, int64(n)*kd); err != nil {
			return fmt.Errorf("cuda: copying a KV cache prefix: %w", err)
		}
	}
	c.Len = n
	return nil
}

// prefixEntry is a group's most recent prompt (plus what was generated after
// it, when remembered at the end) and the cache that holds its keys and
// values.
type prefixEntry struct {
	group string
	fed   []int
	cache *Cache
}

// prefixStore keeps recent groups' caches for Generate, as infer.Runner
// does: across calls, so that a story's later turns reuse its prompt even
// when the caller (eval/coqa's Schedule) submits them in separate batches.
// A cache may be both an entry and the live cache of a running sequence; refs
// counts its holders and it is freed when none is left.
type prefixStore struct {
	entries []prefixEntry
	refs    map[*Cache]int
}

// prefixes returns g's store, creating it on first use.
func (g *Model) prefixes() *prefixStore {
	if g.prefix == nil {
		g.prefix = &prefixStore{refs: map[*Cache]int{}}
	}
	return g.prefix
}

// DropPrefixes frees the prompt prefixes Generate keeps between calls (at
// most 2 + MaxBatch/8 groups' caches). Call it before Close, or to give their
// memory back; it must not run during Generate.
func (g *Model) DropPrefixes() {
	ps := g.prefix
	g.prefix = nil
	if ps != nil {
		ps.clear()
	}
}

// PrefixBytes is the device memory of the kept prefixes.
func (g *Model) PrefixBytes() int64 {
	ps := g.prefix
	if ps == nil {
		return 0
	}
	var n int64
	for _, e := range ps.entries {
		n += e.cache.Bytes()
	}
	return n
}

func (ps *prefixStore) acquire(c *Cache) { ps.refs[c]++ }

// release drops one hold on c and frees it when it was the last.
func (ps *prefixStore) release(c *Cache) {
	if ps.refs[c]--; ps.refs[c] > 0 {
		return
	}
	delete(ps.refs, c)
	if c.ptr != 0 {
		// Copies out of c may still be queued (CopyPrefix): wait for them.
		func() {
			defer c.g.d.bind()()
			_ = c.g.d.st.sync() // a failed kernel is reported by the next step
		}()
	}
	c.Free()
}

func (ps *prefixStore) evict(i int) {
	e := ps.entries[i]
	ps.entries = append(ps.entries[:i], ps.entries[i+1:]...)
	ps.release(e.cache)
}

// find returns group's entry, or nil.
func (ps *prefixStore) find(group string) *prefixEntry {
	for i := range ps.entries {
		if ps.entries[i].group == group {
			return &ps.entries[i]
		}
	}
	return nil
}

// remember makes (fed, cache) group's entry, replacing its previous one,
// and keeps the most recent keep entries.
func (ps *prefixStore) remember(group string, fed []int, cache *Cache, keep int) {
	ps.acquire(cache) // before the old entry's release: it may be the same cache
	for i, e := range ps.entries {
		if e.group == group {
			ps.evict(i)
			break
		}
	}
	ps.entries = append(ps.entries, prefixEntry{group, fed, cache})
	for len(ps.entries) > max(keep, 0) {
		ps.evict(0)
	}
}

// clear frees every entry (e.g. when memory runs out).
func (ps *prefixStore) clear() {
	for len(ps.entries) > 0 {
		ps.evict(0)
	}
}
